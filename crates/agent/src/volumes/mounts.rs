//! Container volumeMounts as the runtime's bind mounts: subPath and subPathExpr
//! resolution (refusing escapes from the volume) and read-only handling.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gantry_runtime::BindMount;
use k8s_openapi::api::core::v1::{Container, VolumeMount};

use super::host::create_volume_dir;
use super::paths::validate_sub_path;
use super::{PodVolumes, PreparedVolume, VolumeError, io_error};

/// One volumeMount as a bind mount.
pub(super) fn bind_mount(
    volumes: &PodVolumes,
    container: &Container,
    mount: &VolumeMount,
) -> Result<BindMount, VolumeError> {
    let volume = volumes
        .get(&mount.name)
        .ok_or_else(|| VolumeError::UnknownVolume(mount.name.clone()))?;
    let sub_path = match (&mount.sub_path, &mount.sub_path_expr) {
        (Some(sub_path), _) if !sub_path.is_empty() => sub_path.clone(),
        (_, Some(expr)) if !expr.is_empty() => expand_env(expr, container)?,
        _ => String::new(),
    };
    let source = if sub_path.is_empty() {
        volume.path.clone()
    } else {
        resolve_sub_path(&mount.name, volume, &sub_path)?
    };
    Ok(BindMount {
        source,
        destination: PathBuf::from(&mount.mount_path),
        read_only: volume.read_only || mount.read_only.unwrap_or(false),
    })
}

/// A subPath below its volume: validated, created if missing for writable volumes,
/// and checked not to escape through symlinks. Writable volumes get the resolved
/// path (the container could swap a component for a symlink later); atomic-writer
/// volumes keep `key -> ..data/key` so a restarted container sees current data.
fn resolve_sub_path(
    volume_name: &str,
    volume: &PreparedVolume,
    sub_path: &str,
) -> Result<PathBuf, VolumeError> {
    let relative = validate_sub_path(sub_path)?;
    let joined = volume.path.join(&relative);
    if !volume.kind.is_projected() && !joined.exists() {
        create_volume_dir(&joined, 0o755)
            .map_err(io_error(format!("creating subPath {}", joined.display())))?;
    }
    let escapes = || VolumeError::SubPathEscapes {
        volume: volume_name.to_owned(),
        sub_path: sub_path.to_owned(),
    };
    let base = std::fs::canonicalize(&volume.path)
        .map_err(io_error(format!("resolving {}", volume.path.display())))?;
    let resolved = std::fs::canonicalize(&joined)
        .map_err(io_error(format!("resolving subPath {}", joined.display())))?;
    if !resolved.starts_with(&base) {
        return Err(escapes());
    }
    Ok(if volume.kind.is_projected() {
        joined
    } else {
        resolved
    })
}

/// Expands `$(VAR)` in a subPathExpr from the container's literal `env` values;
/// `$$(VAR)` is a literal `$(VAR)`, as in Kubernetes.
fn expand_env(expr: &str, container: &Container) -> Result<String, VolumeError> {
    let env: BTreeMap<&str, &str> = container
        .env
        .iter()
        .flatten()
        .filter_map(|var| Some((var.name.as_str(), var.value.as_deref()?)))
        .collect();
    let mut expanded = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(start) = rest.find('$') {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            expanded.push('$');
            rest = escaped;
        } else if let Some(reference) = after.strip_prefix('(')
            && let Some(end) = reference.find(')')
        {
            let name = &reference[..end];
            let value = env.get(name).ok_or(VolumeError::Unsupported(
                "subPathExpr variables without a literal env value",
            ))?;
            expanded.push_str(value);
            rest = &reference[end + 1..];
        } else {
            expanded.push('$');
            rest = after;
        }
    }
    expanded.push_str(rest);
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::EnvVar;

    use super::super::VolumeKind;
    use super::*;

    fn container_with_env(vars: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            env: Some(
                vars.iter()
                    .map(|(name, value)| EnvVar {
                        name: (*name).into(),
                        value: Some((*value).into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn volumes_with(name: &str, volume: PreparedVolume) -> PodVolumes {
        PodVolumes {
            volumes: BTreeMap::from([(name.to_owned(), volume)]),
        }
    }

    #[test]
    fn sub_path_expr_expands_literal_env() {
        let container = container_with_env(&[("POD", "web-0")]);
        assert_eq!(expand_env("logs/$(POD)", &container).unwrap(), "logs/web-0");
        assert_eq!(expand_env("$$(POD)/$x", &container).unwrap(), "$(POD)/$x");
        assert!(expand_env("$(MISSING)", &container).is_err());
    }

    #[test]
    fn mounts_honour_read_only_and_create_sub_paths() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = volumes_with(
            "data",
            PreparedVolume {
                path: dir.path().to_owned(),
                read_only: false,
                kind: VolumeKind::EmptyDir,
            },
        );
        let mut container = container_with_env(&[]);
        container.volume_mounts = Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/logs".into(),
                sub_path: Some("logs/app".into()),
                read_only: Some(true),
                ..Default::default()
            },
        ]);
        let manager_mounts = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|mount| bind_mount(&volumes, &container, mount))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            manager_mounts,
            vec![
                BindMount {
                    source: dir.path().to_owned(),
                    destination: "/data".into(),
                    read_only: false,
                },
                BindMount {
                    source: base.join("logs/app"),
                    destination: "/logs".into(),
                    read_only: true,
                },
            ]
        );
        assert!(dir.path().join("logs/app").is_dir());
    }

    #[test]
    fn sub_paths_cannot_escape_through_symlinks_or_dotdot() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("evil")).unwrap();
        let volume = PreparedVolume {
            path: dir.path().to_owned(),
            read_only: false,
            kind: VolumeKind::EmptyDir,
        };
        assert!(matches!(
            resolve_sub_path("v", &volume, "evil"),
            Err(VolumeError::SubPathEscapes { .. })
        ));
        assert!(matches!(
            resolve_sub_path("v", &volume, "../x"),
            Err(VolumeError::InvalidPath(_))
        ));
    }

    #[test]
    fn unknown_volumes_are_config_errors() {
        let mount = VolumeMount {
            name: "nope".into(),
            mount_path: "/x".into(),
            ..Default::default()
        };
        let error = bind_mount(&PodVolumes::default(), &Container::default(), &mount).unwrap_err();
        assert!(error.is_config_error());
    }
}
