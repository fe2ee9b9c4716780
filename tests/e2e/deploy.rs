//! deploy/ kept honest: every YAML file parses; every environment variable
//! that compose and the Kubernetes manifests set is a setting of the binary
//! it is given to (the built binaries' `--help`); the kustomize overlays
//! render with the real `kubectl kustomize` (installed into .tools/bin by
//! `make setup`) and hold together (names, namespaces, grace periods); and
//! `make cluster` runs and passes WebSockets through its HAProxy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize as _;
use serde_yaml_ng::Value;
use tokio::process::Command;
use wsauth_tests::{bin_path, within};

mod cluster;
mod render;

use render::rendered_overlays;

pub(super) fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every `*.yaml` / `*.yml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            found.extend(yaml_files(&path));
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The YAML documents in `text` (several, separated by `---`).
pub(super) fn documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn read_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    documents(&text, &path.display().to_string())
}

/// The environment variables `binary` reads: clap prints `[env: NAME=` for each.
async fn settings_of(binary: &str) -> BTreeSet<String> {
    let output = within(
        Duration::from_secs(20),
        "--help",
        Command::new(bin_path(binary)).arg("--help").output(),
    )
    .await
    .expect("the binary runs");
    assert!(output.status.success(), "{binary} --help failed");
    let help = String::from_utf8(output.stdout).expect("--help prints UTF-8");
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name.to_owned()))
        .collect();
    assert!(
        names.len() > 5,
        "{binary} --help lists its settings: {help}"
    );
    names
}

/// The settings of both binaries, by binary name.
async fn all_settings() -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut settings = BTreeMap::new();
    for binary in ["wsauth-auth", "wsauth-gateway"] {
        settings.insert(binary, settings_of(binary).await);
    }
    settings
}

/// The wsauth binary a container (or a compose service) runs: its command's
/// first word, else (a patch that names only the container) its name.
fn binary_of(container: &Value) -> Option<&'static str> {
    let command = container["command"][0].as_str().unwrap_or_default();
    match (command, container["name"].as_str()) {
        ("wsauth-auth", _) | ("", Some("auth")) => Some("wsauth-auth"),
        ("wsauth-gateway", _) | ("", Some("gateway")) => Some("wsauth-gateway"),
        _ => None,
    }
}

/// Every value under a key named `key`, anywhere in `doc`.
pub(super) fn values_of<'a>(doc: &'a Value, key: &str) -> Vec<&'a Value> {
    let mut found = Vec::new();
    match doc {
        Value::Mapping(map) => {
            for (k, value) in map {
                if k.as_str() == Some(key) {
                    found.push(value);
                } else {
                    found.extend(values_of(value, key));
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| found.extend(values_of(v, key))),
        _ => {}
    }
    found
}

/// Every container spec anywhere in `doc` (Deployments, and patches of them).
fn containers(doc: &Value) -> Vec<&Value> {
    values_of(doc, "containers")
        .into_iter()
        .flat_map(|list| list.as_sequence().into_iter().flatten())
        .collect()
}

/// The names a container's `env` sets; `envFrom` is refused, because the
/// names it brings in could not be checked here.
fn env_names(container: &Value, origin: &str) -> Vec<String> {
    assert!(
        container.get("envFrom").is_none(),
        "{origin}: use `env` (each name checked against --help), not envFrom"
    );
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|entry| {
            entry["name"]
                .as_str()
                .expect("an env entry has a name")
                .to_owned()
        })
        .collect()
}

/// Panics listing every name in `names` that `binary` does not read.
fn assert_known(
    settings: &BTreeMap<&str, BTreeSet<String>>,
    binary: &str,
    names: &[String],
    origin: &str,
) {
    let known = &settings[binary];
    let unknown: Vec<&String> = names.iter().filter(|n| !known.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "{origin} sets {unknown:?} for {binary}, which `{binary} --help` does not list"
    );
}

/// Checks the env of every wsauth container in `docs`; returns how many.
fn check_containers(
    settings: &BTreeMap<&str, BTreeSet<String>>,
    docs: &[Value],
    origin: &str,
) -> usize {
    let mut checked = 0;
    for doc in docs {
        for container in containers(doc) {
            if let Some(binary) = binary_of(container) {
                assert_known(settings, binary, &env_names(container, origin), origin);
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = yaml_files(&deploy_dir());
    assert!(files.len() >= 10, "found only {files:?}");
    for path in files {
        assert!(
            !read_documents(&path).is_empty(),
            "{} is empty",
            path.display()
        );
    }
}

#[tokio::test]
async fn every_variable_compose_sets_is_a_setting_of_its_binary() {
    let settings = all_settings().await;
    let path = deploy_dir().join("compose.yaml");
    let mut compose = read_documents(&path).remove(0);
    compose
        .apply_merge()
        .expect("compose's `<<` merges resolve");
    let services = compose["services"]
        .as_mapping()
        .expect("compose has services");

    let mut counts = BTreeMap::new();
    let mut haproxy_env = None;
    for (name, service) in services {
        let name = name.as_str().expect("a service name");
        let origin = format!("compose.yaml service {name}");
        let environment: Vec<String> = match &service["environment"] {
            Value::Mapping(map) => map
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            Value::Sequence(items) => items
                .iter()
                .filter_map(|item| item.as_str()?.split('=').next().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if let Some(binary) = binary_of(service) {
            assert_known(&settings, binary, &environment, &origin);
            *counts.entry(binary).or_insert(0) += 1;
        } else if service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("haproxy"))
        {
            let mounts = format!("{:?}", service["volumes"]);
            assert!(
                mounts.contains("./haproxy.cfg:"),
                "{origin} mounts deploy/haproxy.cfg: {mounts}"
            );
            haproxy_env = Some(environment.into_iter().collect::<BTreeSet<_>>());
        }
    }
    assert_eq!(counts.get("wsauth-auth"), Some(&2), "two auth replicas");
    assert_eq!(counts.get("wsauth-gateway"), Some(&3), "three gateways");

    // HAProxy's environment is exactly what the shared haproxy.cfg expands.
    let cfg = std::fs::read_to_string(deploy_dir().join("haproxy.cfg")).expect("haproxy.cfg");
    let expanded: BTreeSet<String> = cfg
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split("${").skip(1))
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect();
    assert_eq!(
        haproxy_env,
        Some(expanded),
        "compose's haproxy env vs haproxy.cfg's ${{VAR}}s"
    );
}

#[tokio::test]
async fn every_variable_the_manifests_set_is_a_setting_of_its_binary() {
    let settings = all_settings().await;
    let mut checked = 0;
    for path in yaml_files(&deploy_dir().join("k8s")) {
        checked += check_containers(
            &settings,
            &read_documents(&path),
            &path.display().to_string(),
        );
    }
    assert!(
        checked >= 4,
        "found only {checked} wsauth containers under deploy/k8s"
    );
    // Patches can add variables too: the rendered overlays are checked as well.
    for (overlay, docs) in rendered_overlays().await {
        assert_eq!(
            check_containers(&settings, &docs, &overlay),
            2,
            "{overlay}: auth and gateway"
        );
    }
}
