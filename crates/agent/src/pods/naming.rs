//! How a pod's containers are named in the engine, so that an agent that
//! restarts finds them again: `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`
//! (the dockershim's scheme). None of the parts may contain `_` in Kubernetes,
//! so the name splits back unambiguously.

/// One attempt at running one container of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerName {
    /// The container's name in the pod spec.
    pub container: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's UID.
    pub uid: String,
    /// 0 for the first run, then one more per restart (the restart count).
    pub attempt: u32,
}

const PREFIX: &str = "k8s";

impl ContainerName {
    /// The engine's name for this attempt.
    pub fn format(&self) -> String {
        format!(
            "{PREFIX}_{}_{}_{}_{}_{}",
            self.container, self.pod, self.namespace, self.uid, self.attempt
        )
    }

    /// Reads back a name made by [`ContainerName::format`]; `None` for other containers.
    pub fn parse(name: &str) -> Option<ContainerName> {
        let parts: Vec<&str> = name.split('_').collect();
        let [PREFIX, container, pod, namespace, uid, attempt] = parts.as_slice() else {
            return None;
        };
        Some(ContainerName {
            container: (*container).to_owned(),
            pod: (*pod).to_owned(),
            namespace: (*namespace).to_owned(),
            uid: (*uid).to_owned(),
            attempt: attempt.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        let name = ContainerName {
            container: "web".into(),
            pod: "web-7d4b9.x".into(),
            namespace: "default".into(),
            uid: "0a1b-2c".into(),
            attempt: 3,
        };
        assert_eq!(name.format(), "k8s_web_web-7d4b9.x_default_0a1b-2c_3");
        assert_eq!(ContainerName::parse(&name.format()), Some(name));
        assert_eq!(ContainerName::parse("happy_turing"), None);
        assert_eq!(ContainerName::parse("k8s_a_b_c_d_notanumber"), None);
        assert_eq!(ContainerName::parse("k8s_a_b_c_d_1_extra"), None);
    }
}
