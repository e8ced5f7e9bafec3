//! Cross-origin access for web apps served from other origins (`ALLOWED_ORIGINS`), on REST and
//! on Socket.IO long-polling. Off by default: then only the edge's own origin (the console)
//! calls it from a browser. Credentials travel in headers (`Authorization`, `X-Token`), never
//! in cookies, so responses never allow credentials.

use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The origins a browser may call the edge from, besides its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// None (the default).
    #[default]
    None,
    /// Any origin (`*`): for development.
    Any,
    /// These, each `scheme://host[:port]`.
    List(Vec<HeaderValue>),
}

impl FromStr for AllowedOrigins {
    type Err = String;

    /// A comma-separated list of origins such as `https://app.example.com,http://localhost:3000`,
    /// or `*`; empty: none.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let entries: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(Self::None);
        }
        if entries == ["*"] {
            return Ok(Self::Any);
        }
        entries
            .into_iter()
            .map(origin)
            .collect::<Result<_, _>>()
            .map(Self::List)
    }
}

/// One origin as browsers send it: a lower-case `http` or `https` scheme, a host and maybe a
/// port, nothing after (not even `/`).
fn origin(entry: &str) -> Result<HeaderValue, String> {
    let well_formed = entry.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https")
            && !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@', '*'])
            && entry.parse::<http::Uri>().is_ok()
    });
    if !well_formed {
        return Err(format!(
            "{entry:?} is not an origin: write scheme://host[:port], e.g. https://app.example.com, separated by commas, or * alone"
        ));
    }
    HeaderValue::from_str(&entry.to_ascii_lowercase()).map_err(|error| error.to_string())
}

/// The layer answering preflights and marking responses for `origins`; `None` when it is off.
pub fn layer(origins: &AllowedOrigins) -> Option<CorsLayer> {
    let allow = match origins {
        AllowedOrigins::None => return None,
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => AllowOrigin::list(list.clone()),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-token"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_strictly() {
        assert_eq!("".parse(), Ok(AllowedOrigins::None));
        assert_eq!(" , ".parse(), Ok(AllowedOrigins::None));
        assert_eq!("*".parse(), Ok(AllowedOrigins::Any));
        assert_eq!(
            "https://App.example.com, http://localhost:3000".parse(),
            Ok(AllowedOrigins::List(vec![
                HeaderValue::from_static("https://app.example.com"),
                HeaderValue::from_static("http://localhost:3000"),
            ]))
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "ftp://app.example.com",
            "https://",
            "https://a.example.com,*",
            "https://user@app.example.com",
            "https://app.example.com/path",
            "https://*.example.com",
        ] {
            assert!(bad.parse::<AllowedOrigins>().is_err(), "{bad} was accepted");
        }
    }
}
