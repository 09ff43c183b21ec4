//! The workload that owns a pod: who deployed the image.
//!
//! The Collector's `k8sattributes` processor adds the owner's name as `k8s.<kind>.name`;
//! when it is there it is the truth. Without it, the pod name still says most of it:
//! a Deployment's pods are `<name>-<replicaset hash>-<pod hash>`, a DaemonSet's, a Job's
//! or a bare ReplicaSet's `<name>-<pod hash>`, a StatefulSet's `<name>-<ordinal>`. Such
//! a guess is marked `derived: true`; nothing is invented where the pod name says nothing.

use serde::{Deserialize, Serialize};
use unseen_model::{ctx, OwnedContext};

/// The owning workload of a finding's pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`, `ReplicaSet`; null when
    /// derived from a pod name that does not tell the kind.
    pub kind: Option<String>,
    pub name: String,
    /// Guessed from the pod name, not reported by the pipeline.
    pub derived: bool,
}

impl Workload {
    /// `Kind/name`, or `name` when the kind is not known: how incidents list workloads.
    pub fn label(&self) -> String {
        match &self.kind {
            Some(kind) => format!("{kind}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The owner attributes, in the order they are preferred: a CronJob's pods also carry
/// their Job, a Deployment's pods their ReplicaSet.
const OWNERS: [(usize, &str); 6] = [
    (ctx::DEPLOYMENT, "Deployment"),
    (ctx::STATEFULSET, "StatefulSet"),
    (ctx::DAEMONSET, "DaemonSet"),
    (ctx::CRONJOB, "CronJob"),
    (ctx::JOB, "Job"),
    (ctx::REPLICASET, "ReplicaSet"),
];

/// The characters Kubernetes uses for generated name suffixes (`SafeEncodeString`:
/// no vowels, no `0`, `1`, `3`, so that suffixes never spell words).
fn is_safe_encoded(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// The workload of a point's context, or `None` when neither an owner attribute nor
/// the pod name tells it.
pub fn workload_of(context: &OwnedContext) -> Option<Workload> {
    for (slot, kind) in OWNERS {
        if let Some(name) = context.get(slot).filter(|n| !n.is_empty()) {
            return Some(Workload {
                kind: Some(kind.to_string()),
                name: name.to_string(),
                derived: false,
            });
        }
    }
    derive_from_pod(context.get(ctx::POD_NAME)?)
}

/// The workload a pod name implies.
pub fn derive_from_pod(pod: &str) -> Option<Workload> {
    let (rest, last) = pod.rsplit_once('-')?;
    if rest.is_empty() {
        return None;
    }
    let derived = |kind: Option<&str>, name: &str| {
        Some(Workload {
            kind: kind.map(str::to_string),
            name: name.to_string(),
            derived: true,
        })
    };
    // A StatefulSet ordinal: digits, no leading zero unless it is `0`.
    if !last.is_empty()
        && last.len() <= 5
        && last.bytes().all(|b| b.is_ascii_digit())
        && (last == "0" || !last.starts_with('0'))
    {
        return derived(Some("StatefulSet"), rest);
    }
    // Pod hashes are 5 characters of the safe alphabet.
    if last.len() != 5 || !is_safe_encoded(last) {
        return None;
    }
    // `<name>-<replicaset hash>-<pod hash>`: the ReplicaSet's pod-template-hash is 6 to 10
    // safe characters (an encoded 32-bit hash).
    if let Some((name, hash)) = rest.rsplit_once('-') {
        if !name.is_empty() && (6..=10).contains(&hash.len()) && is_safe_encoded(hash) {
            return derived(Some("Deployment"), name);
        }
    }
    derived(None, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use unseen_model::Context;

    fn context(pairs: &[(usize, &str)]) -> OwnedContext {
        let mut c = Context::default();
        for (slot, v) in pairs {
            c.0[*slot] = Some(v);
        }
        OwnedContext::new(&c)
    }

    #[test]
    fn owner_attributes_win_and_are_not_derived() {
        let c = context(&[
            (ctx::POD_NAME, "checkout-api-7d4b9c6f8d-x2x7q"),
            (ctx::REPLICASET, "checkout-api-7d4b9c6f8d"),
            (ctx::DEPLOYMENT, "checkout-api"),
        ]);
        assert_eq!(
            workload_of(&c),
            Some(Workload {
                kind: Some("Deployment".into()),
                name: "checkout-api".into(),
                derived: false
            })
        );
        let c = context(&[(ctx::JOB, "backup-29012345"), (ctx::CRONJOB, "backup")]);
        assert_eq!(workload_of(&c).unwrap().kind.as_deref(), Some("CronJob"));
        let c = context(&[(ctx::REPLICASET, "bare-rs")]);
        assert_eq!(workload_of(&c).unwrap().kind.as_deref(), Some("ReplicaSet"));
    }

    #[test]
    fn pod_names_give_derived_workloads() {
        /// A pod name and the (kind, name) it implies, if any.
        type Case = (&'static str, Option<(Option<&'static str>, &'static str)>);
        let table: [Case; 9] = [
            (
                "checkout-api-7d4b9c6f8d-x2x7q",
                Some((Some("Deployment"), "checkout-api")),
            ),
            (
                "coredns-5d78c9869d-gk5wz",
                Some((Some("Deployment"), "coredns")),
            ),
            ("postgres-0", Some((Some("StatefulSet"), "postgres"))),
            ("kafka-12", Some((Some("StatefulSet"), "kafka"))),
            ("cilium-x7k2p", Some((None, "cilium"))),
            ("kube-proxy-9xq2z", Some((None, "kube-proxy"))),
            // Not a generated suffix: nothing is guessed.
            ("standalone", None),
            ("my-pod", None),
            ("-x7k2p", None),
        ];
        for (pod, want) in table {
            let got = derive_from_pod(pod);
            let want = want.map(|(kind, name)| Workload {
                kind: kind.map(str::to_string),
                name: name.to_string(),
                derived: true,
            });
            assert_eq!(got, want, "{pod}");
        }
    }

    #[test]
    fn nothing_is_invented_without_a_pod_name_or_owner() {
        assert_eq!(workload_of(&OwnedContext::default()), None);
        assert_eq!(workload_of(&context(&[(ctx::NAMESPACE, "payments")])), None);
        // An empty owner attribute is no owner.
        let c = context(&[(ctx::DEPLOYMENT, ""), (ctx::POD_NAME, "web-0")]);
        assert_eq!(
            workload_of(&c).unwrap().kind.as_deref(),
            Some("StatefulSet")
        );
    }
}
