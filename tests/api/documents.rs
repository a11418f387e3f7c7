use serde_json::json;

use crate::helpers::{spawn_app, BRIDGE, TOWER};

#[actix_web::test]
async fn a_json_document_is_stored_chunked_and_listed() {
    let app = spawn_app().await;
    let (status, doc) = app
        .post_json(
            "/api/v1/documents",
            &app.admin_key,
            json!({"title": "Tower", "text": TOWER}),
        )
        .await;
    assert_eq!(status, 201, "{doc}");
    assert_eq!(doc["title"], "Tower");
    assert!(doc["chunkCount"].as_i64().unwrap() >= 1);

    let (status, list) = app.get_json("/api/v1/documents", &app.admin_key).await;
    assert_eq!(status, 200);
    assert_eq!(list["documents"][0]["id"], doc["id"]);
}

#[actix_web::test]
async fn a_markdown_body_takes_its_title_from_the_query_or_its_heading() {
    let app = spawn_app().await;
    let mut res = app
        .client
        .post(app.url("/api/v1/documents"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header(("Content-Type", "text/markdown"))
        .send_body(TOWER)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert_eq!(doc["title"], "The Eiffel Tower");

    let mut res = app
        .client
        .post(app.url("/api/v1/documents?title=Bridge%20notes"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header(("Content-Type", "text/plain; charset=utf-8"))
        .send_body(BRIDGE)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert_eq!(doc["title"], "Bridge notes");
}

#[actix_web::test]
async fn a_multipart_upload_makes_one_document_per_file() {
    let app = spawn_app().await;
    let boundary = "XyZBoundary42";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"tower.md\"\r\nContent-Type: text/markdown\r\n\r\n{TOWER}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"bridge.txt\"\r\nContent-Type: text/plain\r\n\r\n{BRIDGE}\r\n\
         --{b}--\r\n",
        b = boundary
    );
    let mut res = app
        .client
        .post(app.url("/api/v1/documents"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header((
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        ))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let created: serde_json::Value = res.json().await.unwrap();
    let titles: Vec<&str> = created["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["tower", "bridge"]);
}

#[actix_web::test]
async fn a_multipart_file_that_is_not_text_or_markdown_is_refused() {
    let app = spawn_app().await;
    let body = "--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.pdf\"\r\n\r\n%PDF\r\n--B--\r\n";
    let mut res = app
        .client
        .post(app.url("/api/v1/documents"))
        .insert_header(("X-API-Key", app.admin_key.as_str()))
        .insert_header(("Content-Type", "multipart/form-data; boundary=B"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

#[actix_web::test]
async fn a_deleted_document_is_gone_from_the_list_and_from_retrieval() {
    let app = spawn_app().await;
    let id = app.add_document(&app.admin_key, "Bridge", BRIDGE).await;

    let (_, answer) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": "When did the Golden Gate Bridge open?"}),
        )
        .await;
    assert_eq!(answer["sources"].as_array().unwrap().len(), 1);

    assert_eq!(
        app.delete(&format!("/api/v1/documents/{id}"), &app.admin_key)
            .await,
        204
    );

    let (_, list) = app.get_json("/api/v1/documents", &app.admin_key).await;
    assert_eq!(list["documents"].as_array().unwrap().len(), 0);
    let (_, answer) = app
        .post_json(
            "/api/v1/ask",
            &app.admin_key,
            json!({"question": "When did the Golden Gate Bridge open?"}),
        )
        .await;
    assert_eq!(answer["sources"].as_array().unwrap().len(), 0);

    assert_eq!(
        app.delete(&format!("/api/v1/documents/{id}"), &app.admin_key)
            .await,
        404
    );
}

#[actix_web::test]
async fn the_document_list_comes_in_pages_newest_first() {
    let app = spawn_app().await;
    let mut added = Vec::new();
    for i in 0..5 {
        added.push(
            app.add_document(&app.admin_key, &format!("d{i}"), BRIDGE)
                .await,
        );
    }
    let (status, whole) = app.get_json("/api/v1/documents", &app.admin_key).await;
    assert_eq!(status, 200);
    assert_eq!(whole["total"], 5);
    assert!(
        whole["next"].is_null() && whole["nextCursor"].is_null(),
        "{whole}"
    );
    let order: Vec<String> = whole["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order.len(), 5);
    let newest_first: Vec<&String> = added.iter().rev().collect();
    let mut created: Vec<&str> = whole["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["createdAt"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
    created.dedup();
    if created.len() == 5 {
        assert_eq!(order.iter().collect::<Vec<_>>(), newest_first);
    }

    // Two at a time, following `next`, gives the same documents in the same order.
    let mut paged = Vec::new();
    let mut path = "/api/v1/documents?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = app.get_json(&path, &app.admin_key).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 5);
        let docs = page["documents"].as_array().unwrap();
        assert!(docs.len() <= 2);
        paged.extend(docs.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                assert!(next.contains(page["nextCursor"].as_str().unwrap()));
                path = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, order);

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=201", "invalid_limit"),
        ("cursor=zz", "invalid_cursor"),
        ("limit=many", "invalid_query"),
    ] {
        let (status, err) = app
            .get_json(&format!("/api/v1/documents?{query}"), &app.admin_key)
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
}
