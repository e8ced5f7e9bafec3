//! One scrape of a component's `/metrics`, read as samples by series.

use std::collections::BTreeMap;

use reqwest::StatusCode;

/// One scrape: every sample by its series (`name{labels}` as exposed).
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    pub async fn of(base: &str) -> Self {
        let response = crawbl_loadtest::rest::http_client()
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().expect("ascii");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.expect("body");
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("`series value`");
                (series.to_owned(), value.parse().expect("a number"))
            })
            .collect();
        Self(samples)
    }

    /// The sample of `series`, 0 when it is not exposed (yet).
    pub fn value(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or_default()
    }

    /// The sum of every series of the family `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                series
                    .split_once('{')
                    .map_or(series.as_str(), |(family, _)| family)
                    == name
                    && labels.iter().all(|label| series.contains(label))
            })
            .map(|(_, value)| value)
            .sum()
    }
}
