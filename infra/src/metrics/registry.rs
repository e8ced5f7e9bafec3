//! The registry: families of counters, gauges and histograms keyed by label values, rendered in
//! the Prometheus text exposition format 0.0.4.
//!
//! Hand-written rather than a metrics crate: what we need is a few atomics and a text format,
//! and the crates bring their own registries, macros and dependency trees. Updating a metric is
//! an atomic add on a handle the caller keeps (`Counter`, `Gauge`, `Histogram`); looking a series
//! up by its labels takes a read lock, once per request at most.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// Series a family may hold before new label values are folded into one `_other` series: label
/// values partly come from clients (gRPC method names of refused calls), and a scrape must stay
/// small whatever they send.
pub const MAX_SERIES_PER_FAMILY: usize = 1000;
/// The label value of the series that takes what no longer fits.
const OVERFLOW_LABEL: &str = "_other";

/// Latency buckets in seconds: from a cached lookup (1 ms) to a long agent turn (2 min).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections, pool size).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn add(&self, amount: i64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations counted into fixed buckets, with their sum.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds, ascending; `+Inf` is implied.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last cell is `+Inf`.
    counts: Vec<AtomicU64>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self(Arc::new(HistogramCells {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, value: f64) {
        let cells = &self.0;
        let bucket = cells
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(cells.bounds.len());
        cells.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // A compare-and-swap loop: there is no atomic float add.
        let _ = cells
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// How many observations were made.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }
}

/// What a family holds per series.
trait Metric: Clone + Send + Sync + 'static {
    const TYPE: &'static str;
    /// Appends the series' sample lines; `labels` is `name="value",…` (possibly empty).
    fn render(&self, name: &str, labels: &str, out: &mut String);
}

impl Metric for Counter {
    const TYPE: &'static str = "counter";

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let _ = writeln!(out, "{name}{} {}", braced(labels), self.get());
    }
}

impl Metric for Gauge {
    const TYPE: &'static str = "gauge";

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let _ = writeln!(out, "{name}{} {}", braced(labels), self.get());
    }
}

impl Metric for Histogram {
    const TYPE: &'static str = "histogram";

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let cells = &self.0;
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (index, count) in cells.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let bound = cells
                .bounds
                .get(index)
                .map_or_else(|| "+Inf".to_owned(), |bound| format_float(*bound));
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        let sum = f64::from_bits(cells.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum{} {}", braced(labels), format_float(sum));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braced(labels));
    }
}

fn braced(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn format_float(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        value.to_string()
    }
}

/// Label values are quoted; backslash, double quote and newline are escaped (format 0.0.4).
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric name with its series, one per combination of label values.
struct Family<M> {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    make: Box<dyn Fn() -> M + Send + Sync>,
    /// Keyed by the label values joined with NUL (one allocation per lookup), in output order.
    series: RwLock<BTreeMap<String, (Vec<String>, M)>>,
}

impl<M: Metric> Family<M> {
    fn with(&self, values: &[&str]) -> M {
        debug_assert_eq!(values.len(), self.label_names.len(), "{}", self.name);
        let key = values.join("\0");
        {
            let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, metric)) = series.get(&key) {
                return metric.clone();
            }
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let (key, values) = if series.len() >= MAX_SERIES_PER_FAMILY && !series.contains_key(&key) {
            let values = vec![OVERFLOW_LABEL.to_owned(); self.label_names.len()];
            (values.join("\0"), values)
        } else {
            (
                key,
                values.iter().map(|value| (*value).to_owned()).collect(),
            )
        };
        let (_, metric) = series.entry(key).or_insert_with(|| (values, (self.make)()));
        metric.clone()
    }
}

/// A family as the registry renders it, whatever its metric type.
trait Render: Send + Sync {
    fn render(&self, out: &mut String);
}

impl<M: Metric> Render for Family<M> {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {} {}", self.name, M::TYPE);
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        for (values, metric) in series.values() {
            let labels = self
                .label_names
                .iter()
                .zip(values)
                .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
                .collect::<Vec<_>>()
                .join(",");
            metric.render(self.name, &labels, out);
        }
    }
}

/// Counters with labels: `with(&["GET", "/v1/users/me"])` is the series of those values.
#[derive(Clone)]
pub struct CounterVec(Arc<Family<Counter>>);

impl CounterVec {
    pub fn with(&self, values: &[&str]) -> Counter {
        self.0.with(values)
    }
}

/// Gauges with labels.
#[derive(Clone)]
pub struct GaugeVec(Arc<Family<Gauge>>);

impl GaugeVec {
    pub fn with(&self, values: &[&str]) -> Gauge {
        self.0.with(values)
    }
}

/// Histograms with labels, all with the same buckets.
#[derive(Clone)]
pub struct HistogramVec(Arc<Family<Histogram>>);

impl HistogramVec {
    pub fn with(&self, values: &[&str]) -> Histogram {
        self.0.with(values)
    }
}

type Refresh = Arc<dyn Fn() + Send + Sync>;

/// Every family of a process, and the refreshers that read gauges at scrape time.
#[derive(Default)]
pub struct Registry {
    families: RwLock<BTreeMap<&'static str, Arc<dyn Render>>>,
    refreshers: Mutex<BTreeMap<String, Refresh>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counter_vec(
        &self,
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> CounterVec {
        CounterVec(self.register(name, help, label_names, Box::new(Counter::default)))
    }

    /// A counter without labels.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        self.counter_vec(name, help, &[]).with(&[])
    }

    pub fn gauge_vec(
        &self,
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> GaugeVec {
        GaugeVec(self.register(name, help, label_names, Box::new(Gauge::default)))
    }

    /// A gauge without labels.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        self.gauge_vec(name, help, &[]).with(&[])
    }

    pub fn histogram_vec(
        &self,
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
        buckets: &'static [f64],
    ) -> HistogramVec {
        HistogramVec(self.register(
            name,
            help,
            label_names,
            Box::new(move || Histogram::new(buckets)),
        ))
    }

    /// Registers a family. Families are made once each (statics), so a second registration of a
    /// name is a programming error: it is logged and replaces the first in the output.
    fn register<M: Metric>(
        &self,
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
        make: Box<dyn Fn() -> M + Send + Sync>,
    ) -> Arc<Family<M>> {
        let family = Arc::new(Family {
            name,
            help,
            label_names,
            make,
            series: RwLock::new(BTreeMap::new()),
        });
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if families.insert(name, family.clone()).is_some() {
            tracing::error!(metric = name, "a metric family was registered twice");
        }
        family
    }

    /// Runs `refresh` before every scrape, to set gauges read from elsewhere (pool sizes, socket
    /// counts). A later refresher with the same `key` replaces the earlier one, so a component
    /// started again in the same process (tests) reports its current state only.
    pub fn on_scrape(&self, key: impl Into<String>, refresh: impl Fn() + Send + Sync + 'static) {
        self.refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.into(), Arc::new(refresh));
    }

    /// Every family in the text exposition format 0.0.4, after running the refreshers.
    pub fn render(&self) -> String {
        let refreshers: Vec<Refresh> = self
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for refresh in refreshers {
            refresh();
        }
        let families: Vec<Arc<dyn Render>> = self
            .families
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut out = String::new();
        for family in families {
            family.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_with_help_type_and_escaped_labels() {
        let registry = Registry::new();
        let requests = registry.counter_vec("requests_total", "Requests.", &["route", "status"]);
        requests.with(&["/a", "200"]).inc();
        requests.with(&["/a", "200"]).add(2);
        requests.with(&["/b\"x\\\n", "500"]).inc();
        registry.gauge("sockets", "Sockets.").set(-3);
        let text = registry.render();
        assert!(text.contains("# HELP requests_total Requests.\n# TYPE requests_total counter\n"));
        assert!(
            text.contains("requests_total{route=\"/a\",status=\"200\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains(r#"requests_total{route="/b\"x\\\n",status="500"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE sockets gauge\nsockets -3\n"),
            "{text}"
        );
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let registry = Registry::new();
        let latency = registry.histogram_vec("latency_seconds", "Latency.", &["m"], &[0.1, 1.0]);
        let series = latency.with(&["x"]);
        series.observe(0.05);
        series.observe(0.5);
        series.observe(0.5);
        series.observe(7.0);
        let text = registry.render();
        for line in [
            "latency_seconds_bucket{m=\"x\",le=\"0.1\"} 1",
            "latency_seconds_bucket{m=\"x\",le=\"1.0\"} 3",
            "latency_seconds_bucket{m=\"x\",le=\"+Inf\"} 4",
            "latency_seconds_sum{m=\"x\"} 8.05",
            "latency_seconds_count{m=\"x\"} 4",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(series.count(), 4);
    }

    #[test]
    fn label_values_past_the_series_limit_fold_into_one_series() {
        let registry = Registry::new();
        let calls = registry.counter_vec("calls_total", "Calls.", &["method"]);
        for index in 0..MAX_SERIES_PER_FAMILY + 50 {
            calls.with(&[&format!("m{index}")]).inc();
        }
        assert_eq!(
            calls.with(&["m0"]).get(),
            1,
            "existing series keep counting"
        );
        let text = registry.render();
        assert_eq!(text.lines().count(), 2 + MAX_SERIES_PER_FAMILY + 1);
        assert!(text.contains("calls_total{method=\"_other\"} 50"), "{text}");
    }

    #[test]
    fn refreshers_run_before_each_scrape_and_replace_each_other_by_key() {
        let registry = Registry::new();
        let gauge = registry.gauge("pool_size", "Pool.");
        let set_to = |value| {
            let gauge = gauge.clone();
            move || gauge.set(value)
        };
        registry.on_scrape("pool", set_to(4));
        assert!(registry.render().contains("pool_size 4\n"));
        registry.on_scrape("pool", set_to(7));
        assert!(registry.render().contains("pool_size 7\n"));
    }
}
