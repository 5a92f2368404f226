//! The test registry: images pushed with crane, tags listed through the distribution API.

use crate::support::registry::Registry;

#[tokio::test]
async fn pushed_tags_are_listed_by_the_registry_api() {
    let registry = Registry::start();
    let d1 = registry.push_image("team/web", "1.3.0");
    let d2 = registry.push_image("team/web", "1.4.0");
    assert!(d1.starts_with("sha256:") && d2.starts_with("sha256:"));
    assert_ne!(d1, d2, "different content must give different digests");

    let url = format!("{}/v2/team/web/tags/list", registry.base_url());
    let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let mut tags: Vec<&str> = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["1.3.0", "1.4.0"]);
    assert_eq!(body["name"], "team/web");

    // The manifest digest the registry reports matches what crane printed.
    let manifest = reqwest::Client::new()
        .head(format!("{}/v2/team/web/manifests/1.4.0", registry.base_url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    assert_eq!(
        manifest.headers()["docker-content-digest"]
            .to_str()
            .unwrap(),
        d2
    );
}

#[tokio::test]
async fn basic_auth_registry_refuses_anonymous_listing() {
    let registry = Registry::start_with_basic_auth("ci", "pushpass");
    registry.push_image("team/api", "2.0.0");
    let url = format!("{}/v2/team/api/tags/list", registry.base_url());

    let anonymous = reqwest::get(&url).await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let authed = reqwest::Client::new()
        .get(&url)
        .basic_auth("ci", Some("pushpass"))
        .send()
        .await
        .unwrap();
    assert_eq!(authed.status(), 200);
    let body: serde_json::Value = authed.json().await.unwrap();
    assert_eq!(body["tags"], serde_json::json!(["2.0.0"]));
}
