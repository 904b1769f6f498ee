//! Image commands, as Docker names them: pull, push, images, rmi, tag, load, save, import,
//! and the `image` group (`image inspect|ls|rm|prune|…`).

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use gantry_image::{
    ArchiveFormat, Credentials, Digest, ImageReference, ImageStore, ImportOptions, LayerProgress,
    PullOptions, Removed, repository_and_tag,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::GlobalOptions;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// List images.
    Images(ListArgs),
    /// Remove one or more images.
    Rmi(RemoveArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Load images from a tar archive (docker-archive or OCI layout).
    Load(LoadArgs),
    /// Save one or more images to a tar archive.
    Save(SaveArgs),
    /// Create an image from a root filesystem directory or tarball.
    Import(ImportArgs),
    /// Log in to a registry (credentials are kept in ~/.docker/config.json, as Docker does).
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageSubcommand),
}

/// `gantry image …`, Docker's management-command spelling.
#[derive(Subcommand)]
pub enum ImageSubcommand {
    /// Display detailed information on one or more images.
    Inspect(InspectArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove one or more images.
    #[command(alias = "remove")]
    Rm(RemoveArgs),
    /// Remove unused images.
    Prune(PruneArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Load images from a tar archive.
    Load(LoadArgs),
    /// Save one or more images to a tar archive.
    Save(SaveArgs),
    /// Create an image from a root filesystem directory or tarball.
    Import(ImportArgs),
}

#[derive(Args)]
pub struct RegistryArgs {
    /// Registry user name (with --password-stdin).
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Use plain HTTP for this registry (loopback registries always use it).
    #[arg(long)]
    insecure: bool,
}

#[derive(Args)]
pub struct PullArgs {
    /// Image to pull, e.g. busybox, localhost:5000/app:1 or name@sha256:…
    image: String,
    /// Suppress progress output.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct PushArgs {
    /// Local image name to push (its registry part says where).
    image: String,
    /// Suppress progress output.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only show images of this repository (optionally with :tag).
    repository: Option<String>,
    /// Only show image IDs.
    #[arg(long, short)]
    quiet: bool,
    /// Show full image IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Show all images (kept for Docker compatibility; there are no intermediate images).
    #[arg(long, short)]
    all: bool,
    /// Filter output: `dangling=true` (untagged images) or `dangling=false`.
    #[arg(long, short)]
    filter: Vec<String>,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// Images to remove, by name or ID.
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove even if the image has several names or is in use.
    #[arg(long, short)]
    force: bool,
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from this tar archive instead of standard input.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Suppress the load output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    DockerArchive,
    OciArchive,
}

#[derive(Args)]
pub struct SaveArgs {
    /// Images to save, by name or ID.
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Archive layout.
    #[arg(long, value_enum, default_value = "docker-archive")]
    format: FormatArg,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Root filesystem: a directory, or a tarball of one (plain, gzip or zstd).
    dir: PathBuf,
    /// Name for the new image, e.g. myimage:1.
    name: String,
    /// Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR or USER.
    #[arg(long, short)]
    change: Vec<String>,
    /// Commit message for the image history.
    #[arg(long, short)]
    message: Option<String>,
}

#[derive(Args)]
pub struct LoginArgs {
    /// Registry host, e.g. localhost:5000 (default: Docker Hub).
    #[arg(default_value = "docker.io")]
    server: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// Registry host (default: Docker Hub).
    #[arg(default_value = "docker.io")]
    server: String,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all images not used by a container, not just dangling ones.
    #[arg(long, short)]
    all: bool,
    /// Do not prompt for confirmation (prune never prompts; accepted for Docker compatibility).
    #[arg(long, short)]
    force: bool,
}

impl ImageCommand {
    /// Runs the command to completion.
    pub fn run(self, global: &GlobalOptions) -> anyhow::Result<()> {
        // Opened per command, so that login and logout (credentials are not the
        // store's business) do not create a store.
        let store = || -> anyhow::Result<ImageStore> {
            let store = ImageStore::open(&global.root).context("opening the image store")?;
            // rmi and prune must not delete what a container (even a stopped one) is made of.
            let containers = crate::commands::container::runtime(global)?;
            Ok(store.with_usage_check(Arc::new(move |id| containers.uses_image(id.as_str()))))
        };
        match self {
            ImageCommand::Pull(args) => pull(&store()?, args),
            ImageCommand::Push(args) => push(&store()?, args),
            ImageCommand::Images(args) => list(&store()?, args),
            ImageCommand::Rmi(args) => remove(&store()?, args),
            ImageCommand::Tag(args) => Ok(store()?.tag(&args.source, &args.target)?),
            ImageCommand::Load(args) => load(&store()?, args),
            ImageCommand::Save(args) => save(&store()?, args),
            ImageCommand::Import(args) => import(&store()?, args),
            ImageCommand::Login(args) => login(args),
            ImageCommand::Logout(args) => logout(args),
            ImageCommand::Image(sub) => match sub {
                ImageSubcommand::Inspect(args) => inspect(&store()?, args),
                ImageSubcommand::Ls(args) => list(&store()?, args),
                ImageSubcommand::Rm(args) => remove(&store()?, args),
                ImageSubcommand::Prune(args) => prune(&store()?, args),
                ImageSubcommand::Pull(args) => pull(&store()?, args),
                ImageSubcommand::Push(args) => push(&store()?, args),
                ImageSubcommand::Tag(args) => Ok(store()?.tag(&args.source, &args.target)?),
                ImageSubcommand::Load(args) => load(&store()?, args),
                ImageSubcommand::Save(args) => save(&store()?, args),
                ImageSubcommand::Import(args) => import(&store()?, args),
            },
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn registry_options(
    args: &RegistryArgs,
    quiet: bool,
) -> anyhow::Result<(PullOptions, Option<Arc<Bars>>)> {
    let credentials = match (&args.username, args.password_stdin) {
        (Some(username), true) => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            Some(Credentials {
                username: username.clone(),
                password: password.trim_end_matches(['\r', '\n']).to_owned(),
            })
        }
        (Some(_), false) => bail!("--username needs --password-stdin"),
        (None, _) => None,
    };
    let bars = (!quiet).then(|| Arc::new(Bars::new()));
    let progress = bars.clone().map(|b| b as Arc<dyn LayerProgress>);
    Ok((
        PullOptions {
            credentials,
            insecure: args.insecure,
            progress,
        },
        bars,
    ))
}

fn login(args: LoginArgs) -> anyhow::Result<()> {
    let (options, _) = registry_options(&args.registry, true)?;
    let Some(credentials) = options.credentials else {
        bail!("give the credentials with --username NAME --password-stdin");
    };
    runtime()?.block_on(gantry_image::verify_login(
        &args.server,
        &credentials,
        args.registry.insecure,
    ))?;
    let path = gantry_image::save_docker_config_credentials(&args.server, Some(&credentials))?;
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        path.display()
    );
    println!("Login Succeeded");
    Ok(())
}

fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    gantry_image::save_docker_config_credentials(&args.server, None)?;
    println!("Removing login credentials for {}", args.server);
    Ok(())
}

fn pull(store: &ImageStore, args: PullArgs) -> anyhow::Result<()> {
    let reference = ImageReference::parse(&args.image)?;
    let (options, _bars) = registry_options(&args.registry, args.quiet)?;
    if !args.quiet {
        if reference.tag() == Some("latest") && !args.image.ends_with(":latest") {
            println!("Using default tag: latest");
        }
        let what = reference.tag().unwrap_or("digest");
        println!(
            "{what}: Pulling from {}",
            gantry_image::familiar(&reference.name())
        );
    }
    let before = store.resolve(&args.image).ok().map(|image| image.manifest);
    let id = runtime()?.block_on(store.pull(&args.image, &options))?;
    let image = store.resolve(id.as_str())?;
    let up_to_date = before.as_ref() == Some(&image.manifest);
    if args.quiet {
        println!(
            "{}",
            reference.tagged_name().unwrap_or_else(|| reference.name())
        );
        return Ok(());
    }
    let name = reference.name();
    if let Some(digest) = image.repo_digests.iter().find_map(|d| {
        let (repo, digest) = d.rsplit_once('@')?;
        (gantry_image::familiar(&name) == repo).then_some(digest)
    }) {
        println!("Digest: {digest}");
    }
    if up_to_date {
        println!("Status: Image is up to date for {reference}");
    } else {
        println!("Status: Downloaded newer image for {reference}");
    }
    println!(
        "{}",
        reference
            .tagged_name()
            .unwrap_or_else(|| format!("{name}@{}", image.manifest))
    );
    Ok(())
}

fn push(store: &ImageStore, args: PushArgs) -> anyhow::Result<()> {
    let reference = ImageReference::parse(&args.image)?;
    let (options, _bars) = registry_options(&args.registry, args.quiet)?;
    if !args.quiet {
        println!("The push refers to repository [{}]", reference.name());
    }
    let digest = runtime()?.block_on(store.push(&args.image, &options))?;
    let size = store.blob_size(&digest).unwrap_or(0);
    println!(
        "{}: digest: {digest} size: {size}",
        reference.tag().unwrap_or("latest")
    );
    Ok(())
}

fn list(store: &ImageStore, args: ListArgs) -> anyhow::Result<()> {
    let filter = args.repository.as_deref().map(repository_and_tag);
    let dangling = dangling_filter(&args.filter)?;
    let now = jiff::Timestamp::now();
    let mut rows = Vec::new();
    for image in store.list()? {
        if dangling.is_some_and(|wanted| wanted != image.repo_tags.is_empty()) {
            continue;
        }
        let id = if args.no_trunc {
            image.id.to_string()
        } else {
            image.id.short().to_owned()
        };
        let created = image
            .created
            .as_deref()
            .map_or_else(|| "N/A".to_owned(), |c| time_ago(c, now));
        let mut names: Vec<(String, String)> = image
            .repo_tags
            .iter()
            .map(|t| repository_and_tag(t))
            .collect();
        if names.is_empty() {
            let mut repositories: Vec<String> = image
                .repo_digests
                .iter()
                .filter_map(|d| Some(d.split_once('@')?.0.to_owned()))
                .collect();
            repositories.dedup();
            names = repositories
                .into_iter()
                .map(|repo| (repo, "<none>".to_owned()))
                .collect();
        }
        if names.is_empty() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repository, tag) in names {
            let wanted = filter.as_ref().is_none_or(|(repo, want_tag)| {
                *repo == repository && (want_tag.is_empty() || *want_tag == tag)
            });
            if wanted {
                rows.push([
                    repository,
                    tag,
                    id.clone(),
                    created.clone(),
                    human_size(image.size),
                ]);
            }
        }
    }
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for row in rows.iter().filter(|row| seen.insert(row[2].clone())) {
            println!("{}", row[2]);
        }
        return Ok(());
    }
    print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
    Ok(())
}

/// The `dangling=BOOL` filter, the one `images --filter` supports.
fn dangling_filter(filters: &[String]) -> anyhow::Result<Option<bool>> {
    let mut dangling = None;
    for filter in filters {
        match filter.split_once('=') {
            Some(("dangling", "true" | "1")) => dangling = Some(true),
            Some(("dangling", "false" | "0")) => dangling = Some(false),
            _ => bail!("unsupported filter {filter:?} (only dangling=true|false is)"),
        }
    }
    Ok(dangling)
}

fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("   ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn remove(store: &ImageStore, args: RemoveArgs) -> anyhow::Result<()> {
    let mut failures = 0;
    for image in &args.images {
        match store.remove(image, args.force) {
            Ok(removed) => {
                for event in removed {
                    match event {
                        Removed::Untagged(name) => println!("Untagged: {name}"),
                        Removed::Deleted(id) => println!("Deleted: {id}"),
                    }
                }
            }
            Err(error) => {
                eprintln!("Error response from daemon: {error}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        bail!(
            "{failures} of {} images could not be removed",
            args.images.len()
        );
    }
    Ok(())
}

fn prune(store: &ImageStore, args: PruneArgs) -> anyhow::Result<()> {
    let report = store.prune(args.all)?;
    if !report.deleted.is_empty() {
        println!("Deleted Images:");
        for id in &report.deleted {
            println!("deleted: {id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(report.reclaimed_bytes)
    );
    Ok(())
}

fn load(store: &ImageStore, args: LoadArgs) -> anyhow::Result<()> {
    let loaded = match &args.input {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            store.load(file)?
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            store.load(stdin.lock())?
        }
    };
    if !args.quiet {
        for image in loaded {
            if image.tags.is_empty() {
                println!("Loaded image ID: {}", image.id);
            }
            for tag in image.tags {
                println!("Loaded image: {tag}");
            }
        }
    }
    Ok(())
}

fn save(store: &ImageStore, args: SaveArgs) -> anyhow::Result<()> {
    let format = match args.format {
        FormatArg::DockerArchive => ArchiveFormat::DockerArchive,
        FormatArg::OciArchive => ArchiveFormat::OciArchive,
    };
    match &args.output {
        Some(path) => {
            // Written beside the target and renamed, so a failed save leaves no truncated archive.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut temp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating {}", path.display()))?;
            store.save(&args.images, format, temp.as_file_mut())?;
            temp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write the archive to a terminal; use -o FILE or redirect stdout"
                );
            }
            store.save(&args.images, format, stdout.lock())?;
        }
    }
    Ok(())
}

fn import(store: &ImageStore, args: ImportArgs) -> anyhow::Result<()> {
    let mut options = ImportOptions {
        message: args.message,
        ..Default::default()
    };
    for change in &args.change {
        apply_change(&mut options, change)?;
    }
    let id = store.import(&args.dir, &args.name, &options)?;
    println!("{id}");
    Ok(())
}

/// Applies one `--change` Dockerfile instruction, in JSON (`CMD ["a","b"]`) or shell form.
fn apply_change(options: &mut ImportOptions, change: &str) -> anyhow::Result<()> {
    let (instruction, value) = change
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((change.trim(), ""));
    let value = value.trim();
    let command = || -> Vec<String> {
        serde_json::from_str::<Vec<String>>(value)
            .unwrap_or_else(|_| vec!["/bin/sh".into(), "-c".into(), value.to_owned()])
    };
    match instruction.to_ascii_uppercase().as_str() {
        "CMD" => options.cmd = command(),
        "ENTRYPOINT" => options.entrypoint = command(),
        "ENV" => match value.split_once('=') {
            Some(_) => options.env.push(value.to_owned()),
            None => match value.split_once(char::is_whitespace) {
                Some((key, val)) => options.env.push(format!("{key}={}", val.trim())),
                None => bail!("ENV needs KEY=value: {change}"),
            },
        },
        "WORKDIR" => options.working_dir = Some(value.to_owned()),
        "USER" => options.user = Some(value.to_owned()),
        other => bail!(
            "unsupported --change instruction {other} (CMD, ENTRYPOINT, ENV, WORKDIR and USER are)"
        ),
    }
    Ok(())
}

fn inspect(store: &ImageStore, args: InspectArgs) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for image in &args.images {
        match store.inspect(image) {
            Ok(value) => found.push(value),
            Err(gantry_image::ImageError::NotFound(_)) => missing.push(image.clone()),
            Err(error) => return Err(error.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    if !missing.is_empty() {
        bail!("No such image: {}", missing.join(", "));
    }
    Ok(())
}

/// Docker's "2 hours ago" style.
fn time_ago(created: &str, now: jiff::Timestamp) -> String {
    let Ok(created) = created.parse::<jiff::Timestamp>() else {
        return "N/A".into();
    };
    let seconds = now.as_second() - created.as_second();
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match seconds {
        i64::MIN..=0 => "Less than a second ago".into(),
        1..=59 => plural(seconds, "second"),
        60..=119 => "About a minute ago".into(),
        120..=3599 => plural(seconds / 60, "minute"),
        3600..=7199 => "About an hour ago".into(),
        7200..=172_799 => plural(seconds / 3600, "hour"),
        172_800..=1_209_599 => plural(seconds / 86_400, "day"),
        1_209_600..=5_183_999 => plural(seconds / 604_800, "week"),
        5_184_000..=63_071_999 => plural(seconds / 2_592_000, "month"),
        _ => plural(seconds / 31_536_000, "year"),
    }
}

/// Docker's decimal sizes with three significant digits ("4.26MB").
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let precision = if value >= 100.0 || unit == 0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.precision$}{}", UNITS[unit])
}

/// One progress bar per layer, Docker style; plain status lines when stderr is not a terminal.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    interactive: bool,
}

impl Bars {
    fn new() -> Bars {
        let interactive = std::io::stderr().is_terminal();
        let target = if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            interactive,
        }
    }

    fn bar(&self, digest: &Digest) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(digest.clone())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(0));
                let style = ProgressStyle::with_template(
                    "{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(digest.short().to_owned());
                bar
            })
            .clone()
    }
}

impl LayerProgress for Bars {
    fn started(&self, digest: &Digest, total: Option<u64>) {
        let bar = self.bar(digest);
        bar.set_length(total.unwrap_or(0));
        bar.set_message("Downloading");
    }

    fn advanced(&self, digest: &Digest, bytes: u64) {
        self.bar(digest).inc(bytes);
    }

    fn finished(&self, digest: &Digest, status: &str) {
        let bar = self.bar(digest);
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.finish_with_message(status.to_owned());
        if !self.interactive {
            println!("{}: {status}", digest.short());
            let _ = std::io::stdout().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        let now: jiff::Timestamp = "2024-01-01T12:00:00Z".parse().unwrap();
        assert_eq!(time_ago("2024-01-01T10:00:00Z", now), "2 hours ago");
        assert_eq!(time_ago("2024-01-01T11:59:00Z", now), "About a minute ago");
        assert_eq!(time_ago("2023-12-29T12:00:00Z", now), "3 days ago");
    }

    #[test]
    fn only_the_dangling_filter_is_accepted() {
        assert_eq!(dangling_filter(&[]).unwrap(), None);
        assert_eq!(
            dangling_filter(&["dangling=true".into()]).unwrap(),
            Some(true)
        );
        assert_eq!(
            dangling_filter(&["dangling=false".into()]).unwrap(),
            Some(false)
        );
        assert!(dangling_filter(&["label=x".into()]).is_err());
    }

    #[test]
    fn import_changes_follow_dockerfile_syntax() {
        let mut options = ImportOptions::default();
        apply_change(&mut options, r#"CMD ["/bin/sleep", "10"]"#).unwrap();
        apply_change(&mut options, "ENTRYPOINT echo hi").unwrap();
        apply_change(&mut options, "ENV A=b").unwrap();
        apply_change(&mut options, "WORKDIR /srv").unwrap();
        assert_eq!(options.cmd, ["/bin/sleep", "10"]);
        assert_eq!(options.entrypoint, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(options.env, ["A=b"]);
        assert_eq!(options.working_dir.as_deref(), Some("/srv"));
        assert!(apply_change(&mut options, "RUN rm -rf /").is_err());
    }
}
