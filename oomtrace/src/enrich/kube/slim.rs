//! The part of a Pod the agent reads, as small typed structs: names, uid, labels, owner
//! references and container names and ids. serde skips the rest of the API server's JSON
//! (annotations, managed fields, the spec's images, env, volumes and probes, conditions)
//! without building anything for it, so a page of pods costs what is kept of them, not their
//! manifests, and no `serde_json::Value` tree is made.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Deserializer};

/// A Pod, as much as [`super::pod::parse_pod`] reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct SlimPod {
    /// Only the fields of [`SlimMeta`] are filled in.
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SlimSpec>,
    #[serde(default)]
    pub status: Option<SlimStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SlimSpec {
    pub init_containers: Option<Vec<Named>>,
    pub containers: Option<Vec<Named>>,
    pub ephemeral_containers: Option<Vec<Named>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Named {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SlimStatus {
    pub init_container_statuses: Option<Vec<SlimContainerStatus>>,
    pub container_statuses: Option<Vec<SlimContainerStatus>>,
    pub ephemeral_container_statuses: Option<Vec<SlimContainerStatus>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SlimContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
    pub last_state: Option<SlimLastState>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct SlimLastState {
    pub terminated: Option<SlimTerminated>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct SlimTerminated {
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
}

/// The metadata fields kept (and `resourceVersion`, which the watcher resumes from).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<SlimOwner>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimOwner {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
    controller: Option<bool>,
}

fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = SlimMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        owner_references: m.owner_references.map(|refs| {
            refs.into_iter()
                .map(|r| OwnerReference {
                    api_version: r.api_version,
                    kind: r.kind,
                    name: r.name,
                    uid: r.uid,
                    controller: r.controller,
                    block_owner_deletion: None,
                })
                .collect()
        }),
        ..ObjectMeta::default()
    })
}

/// Served as core/v1 `pods`, like k8s-openapi's Pod.
impl kube::Resource for SlimPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn reads_only_what_is_kept_and_lists_the_same_path_as_pod() {
        let pod: SlimPod = serde_json::from_value(json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(100_000)},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:containers": {}}}}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d", "uid": "rs", "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "b"}]}],
                     "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "app", "containerID": "containerd://abc", "ready": true,
                                              "lastState": {"terminated": {"exitCode": 137, "containerID": "containerd://old"}}}]}
        }))
        .expect("a pod");
        let m = &pod.metadata;
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref(), m.uid.as_deref()),
            (Some("web-1"), Some("shop"), Some("u-1"))
        );
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert_eq!(m.annotations, None, "not kept");
        assert_eq!(m.managed_fields, None, "not kept");
        let owner = &m.owner_references.as_ref().expect("owners")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ReplicaSet", Some(true))
        );
        let st = &pod
            .status
            .as_ref()
            .expect("status")
            .container_statuses
            .as_ref()
            .expect("cs")[0];
        assert_eq!(st.container_id.as_deref(), Some("containerd://abc"));
        let last = st.last_state.as_ref().and_then(|l| l.terminated.as_ref());
        assert_eq!(
            last.and_then(|t| t.container_id.as_deref()),
            Some("containerd://old")
        );
        use k8s_openapi::api::core::v1::Pod;
        assert_eq!(SlimPod::url_path(&(), None), Pod::url_path(&(), None));
        assert_eq!(
            SlimPod::url_path(&(), Some("shop")),
            Pod::url_path(&(), Some("shop"))
        );
        assert_eq!(SlimPod::api_version(&()), Pod::api_version(&()));
    }
}
