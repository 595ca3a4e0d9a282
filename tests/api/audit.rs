//! The audit trail (issue 16, in progress): what the admin API records, and `GET /api/v1/audit`.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn creating_a_client_through_the_admin_api_is_recorded_once_with_its_actor_and_no_secret() {
    let app = spawn_app().await;
    let (admin, bearer) = app.admin_bearer().await;
    let created: Value = app
        .http
        .post(app.url("/api/v1/clients"))
        .bearer_auth(&bearer)
        .json(&json!({"name": "Billing", "client_type": "confidential",
            "grant_types": ["client_credentials"], "scope": "read"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    let client_id = created["client"]["client_id"].as_str().unwrap();

    let trail: Value = app
        .http
        .get(app.url("/api/v1/audit?action=client.create"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = trail["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{trail}");
    let entry = &items[0];
    assert_eq!(entry["actor"]["kind"], "client");
    assert_eq!(entry["actor"]["id"], admin.id.as_str());
    assert_eq!(entry["target_id"], client_id);
    assert_eq!(entry["target_name"], "Billing");
    assert_eq!(entry["outcome"], "ok");
    assert!(!trail.to_string().contains(secret), "no secret in the trail");

    // Filters: another action or actor finds nothing; without the token, 401.
    for query in ["action=client.delete", "actor=someone-else", "since=4102444800"] {
        let page: Value = app
            .http
            .get(app.url(&format!("/api/v1/audit?{query}")))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["items"], json!([]), "{query}");
    }
    let anonymous = app.http.get(app.url("/api/v1/audit")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}
