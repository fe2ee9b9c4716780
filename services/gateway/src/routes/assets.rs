//! `/client.js` and `/react.js`: the browser client, compiled into the binary
//! from `web/`, with an ETag so browsers revalidate instead of re-downloading.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A file served as-is, with its ETag fixed at compile time.
struct Asset {
    body: &'static str,
    etag: u64,
}

impl Asset {
    const fn new(body: &'static str) -> Self {
        Self {
            body,
            etag: fnv1a(body.as_bytes()),
        }
    }
}

static CLIENT_JS: Asset = Asset::new(include_str!("../../web/client.js"));
static REACT_JS: Asset = Asset::new(include_str!("../../web/react.js"));

/// FNV-1a: a content hash that a `const fn` can compute; an ETag only has to
/// change when the file does, not resist forgery.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

pub async fn client_js(headers: HeaderMap) -> Response {
    serve(&CLIENT_JS, &headers)
}

pub async fn react_js(headers: HeaderMap) -> Response {
    serve(&REACT_JS, &headers)
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = HeaderValue::try_from(format!("\"{:016x}\"", asset.etag))
        .expect("a quoted hex string is a valid header value");
    let mut response = if matches_etag(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    // Cache, but ask every time: a new gateway may serve a new client.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Public code without credentials: any page may import it (module
    // scripts are fetched in CORS mode).
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// Whether `If-None-Match` names `etag` (weakly, as RFC 9110 §13.1.2 asks for GET) or is `*`.
fn matches_etag(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    async fn fetch(path: &str, if_none_match: Option<&str>) -> (Response, String) {
        let router = Router::new()
            .route("/client.js", get(client_js))
            .route("/react.js", get(react_js));
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let response = router
            .oneshot(request.body(Body::empty()).expect("valid request"))
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (
            Response::from_parts(parts, Body::empty()),
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn the_client_is_javascript_with_an_etag_and_revalidates_to_304() {
        for (path, needle) in [
            ("/client.js", "export class WsAuthClient"),
            ("/react.js", "from \"react\""),
        ] {
            let (response, body) = fetch(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "text/javascript; charset=utf-8"
            );
            assert!(body.contains(needle), "{path} holds {needle}");
            let etag = response.headers()[header::ETAG]
                .to_str()
                .expect("ascii")
                .to_owned();
            assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

            let (response, body) = fetch(path, Some(&etag)).await;
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert!(body.is_empty());
            assert_eq!(response.headers()[header::ETAG], etag.as_str());

            let (response, _) = fetch(path, Some("\"0000000000000000\"")).await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "a stale ETag gets the file"
            );
        }
    }

    fn with_if_none_match(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_NONE_MATCH, value.parse().expect("header"));
        }
        headers
    }

    #[test]
    fn the_etag_follows_the_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(CLIENT_JS.etag, fnv1a(CLIENT_JS.body.as_bytes()));
        assert_ne!(CLIENT_JS.etag, REACT_JS.etag);
    }

    #[test]
    fn if_none_match_matches_strong_weak_listed_and_star() {
        let etag = HeaderValue::from_static("\"00ff\"");
        assert!(matches_etag(&with_if_none_match(&["\"00ff\""]), &etag));
        assert!(matches_etag(&with_if_none_match(&["W/\"00ff\""]), &etag));
        assert!(matches_etag(
            &with_if_none_match(&["\"aa\", \"00ff\""]),
            &etag
        ));
        assert!(matches_etag(
            &with_if_none_match(&["\"aa\"", "\"00ff\""]),
            &etag
        ));
        assert!(matches_etag(&with_if_none_match(&["*"]), &etag));
        assert!(!matches_etag(&with_if_none_match(&["\"00fe\""]), &etag));
        assert!(!matches_etag(&HeaderMap::new(), &etag));
    }
}
