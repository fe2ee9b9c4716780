//! The kustomize overlays rendered by the real `kubectl kustomize`, and what
//! must hold in what they render: names, namespaces, selectors, grace periods.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;
use tokio::process::Command;
use wsauth_tests::within;

use super::{deploy_dir, documents, values_of};

/// `kubectl` from .tools/bin (what `make setup` installs, pinned), else from PATH.
fn kubectl() -> PathBuf {
    let runs = |program: &Path| {
        std::process::Command::new(program)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl");
    if runs(&local) {
        return local;
    }
    let on_path = PathBuf::from("kubectl");
    assert!(
        runs(&on_path),
        "kubectl is missing: run `make setup` (installs it into .tools/bin; `make test` does)"
    );
    on_path
}

/// Every overlay under deploy/k8s/overlays, rendered by `kubectl kustomize`.
pub(super) async fn rendered_overlays() -> Vec<(String, Vec<Value>)> {
    let program = kubectl();
    let dir = deploy_dir().join("k8s/overlays");
    let mut rendered = Vec::new();
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s/overlays")
        .map(|e| e.expect("a readable entry").path())
        .collect();
    overlays.sort();
    for overlay in overlays {
        let name = format!(
            "overlay {}",
            overlay.file_name().unwrap_or_default().to_string_lossy()
        );
        let output = within(
            Duration::from_secs(60),
            "kubectl kustomize",
            Command::new(&program)
                .arg("kustomize")
                .arg(&overlay)
                .output(),
        )
        .await
        .expect("kubectl runs");
        assert!(
            output.status.success(),
            "{name} does not render: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("YAML is UTF-8");
        rendered.push((name.clone(), documents(&text, &name)));
    }
    for expected in ["overlay dev", "overlay production"] {
        assert!(
            rendered.iter().any(|(name, _)| name == expected),
            "{expected} renders"
        );
    }
    rendered
}

/// The rendered object of `kind` named `name`.
fn object<'a>(docs: &'a [Value], kind: &str, name: &str, overlay: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{overlay} renders no {kind} {name}"))
}

/// The value of env var `name` in a Deployment's first container.
fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))?["value"]
        .as_str()
}

/// Whether `selector` (matchLabels) selects the pods of `deployment`.
fn selects(selector: &Value, deployment: &Value) -> bool {
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    selector["matchLabels"]
        .as_mapping()
        .is_some_and(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[tokio::test]
async fn the_overlays_render_with_kubectl_and_hold_together() {
    for (overlay, docs) in rendered_overlays().await {
        let auth = object(&docs, "Deployment", "wsauth-auth", &overlay);
        let gateway = object(&docs, "Deployment", "wsauth-gateway", &overlay);
        let service = object(&docs, "Service", "wsauth-auth", &overlay);
        assert_eq!(
            service["spec"]["clusterIP"].as_str(),
            Some("None"),
            "{overlay}: headless"
        );
        let namespace = service["metadata"]["namespace"]
            .as_str()
            .expect("a namespace");
        let host = format!("wsauth-auth.{namespace}.svc.cluster.local");
        assert_eq!(
            env_value(gateway, "AUTH_URL"),
            Some(format!("dns:///{host}:50051").as_str()),
            "{overlay}: gateways reach auth through the headless Service of their namespace"
        );
        // Under mTLS each auth address is verified against AUTH_URL's host
        // (or AUTH_TLS_SERVER_NAME): auth's certificate must carry it.
        if env_value(gateway, "AUTH_TLS_CA_FILE").is_some() {
            let expected = env_value(gateway, "AUTH_TLS_SERVER_NAME").unwrap_or(&host);
            let certificate = object(&docs, "Certificate", "wsauth-auth", &overlay);
            let names = format!("{:?}", certificate["spec"]["dnsNames"]);
            assert!(
                names.contains(expected),
                "{overlay}: auth's certificate names {expected}: {names}"
            );
        }

        let hpa = object(&docs, "HorizontalPodAutoscaler", "wsauth-gateway", &overlay);
        assert_eq!(
            hpa["spec"]["scaleTargetRef"]["name"], gateway["metadata"]["name"],
            "{overlay}"
        );
        let gateway_pdb = object(&docs, "PodDisruptionBudget", "wsauth-gateway", &overlay);
        assert!(
            selects(&gateway_pdb["spec"]["selector"], gateway),
            "{overlay}: gateway PDB"
        );
        let policy = object(&docs, "NetworkPolicy", "wsauth-auth", &overlay);
        assert!(
            selects(&policy["spec"]["podSelector"], auth),
            "{overlay}: policy covers auth"
        );
        let peers = format!("{:?}", policy["spec"]["ingress"][0]["from"]);
        let gateway_peer = policy["spec"]["ingress"][0]["from"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|peer| selects(&peer["podSelector"], gateway));
        assert!(gateway_peer, "{overlay}: gateways may reach auth: {peers}");

        for deployment in [auth, gateway] {
            let pod = &deployment["spec"]["template"]["spec"];
            let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
            let pre_stop: u64 = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{overlay}: {name} sleeps in preStop"));
            let grace: u64 = env_value(deployment, "SHUTDOWN_GRACE_S")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{overlay}: {name} sets SHUTDOWN_GRACE_S"));
            let period = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
            assert!(
                period > pre_stop + grace,
                "{overlay}: {name}'s terminationGracePeriodSeconds {period} must exceed preStop {pre_stop} + SHUTDOWN_GRACE_S {grace}"
            );
        }

        // Generated secrets get a hash suffix that kustomize writes into
        // every reference; a reference it missed would name no Secret.
        let secrets: BTreeSet<&str> = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("Secret"))
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        if !secrets.is_empty() {
            for reference in docs.iter().flat_map(|d| values_of(d, "secretKeyRef")) {
                let named = reference["name"].as_str();
                assert!(
                    named.is_some_and(|n| secrets.contains(n)),
                    "{overlay}: a secretKeyRef names {named:?}, not one of {secrets:?}"
                );
            }
        }
    }
}
