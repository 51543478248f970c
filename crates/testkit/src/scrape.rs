//! Scraping a service's `/metrics` as Prometheus does, and reading the figures through a real
//! exposition parser (`openmetrics-parser`: the OpenMetrics and the Prometheus text grammars).

use std::{collections::HashMap, net::SocketAddr};

use anyhow::{bail, Context};
use openmetrics_parser::{
    openmetrics::parse_openmetrics, prometheus::parse_prometheus, MetricNumber, OpenMetricsValue,
    PrometheusValue,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which exposition format to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Accept: application/openmetrics-text` (what Prometheus sends).
    OpenMetrics,
    /// No preference: the Prometheus text format, 0.0.4 (what curl gets).
    PrometheusText,
}

/// One sample: its labels and its value (a histogram's: its count and sum).
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: HashMap<String, String>,
    pub value: f64,
    /// A histogram's sum; `None` for the other types.
    pub sum: Option<f64>,
}

/// A parsed scrape: the families by name (counters by their name without `_total`), their
/// type as the parser read it, and their samples.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: HashMap<String, (String, Vec<Sample>)>,
    /// The body as served.
    pub text: String,
}

impl Exposition {
    /// The samples of `family` whose labels include every pair of `labels`.
    pub fn samples<'a>(
        &'a self,
        family: &str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .get(family)
            .map(|(_, samples)| samples.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(move |s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
    }

    /// The sum over [`Self::samples`] (for a histogram: of the counts).
    pub fn sum(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(family, labels).map(|s| s.value).sum()
    }

    /// The type of `family` (`counter`, `gauge`, `histogram`, …), if exposed.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.families.get(family).map(|(kind, _)| kind.as_str())
    }
}

fn number(n: &MetricNumber) -> f64 {
    match n {
        MetricNumber::Float(f) => *f,
        MetricNumber::Int(i) => *i as f64,
    }
}

/// `GET http://addr/metrics` in `format`, parsed. Fails on anything but a 200 with the
/// format's content type and a body the grammar accepts.
pub async fn scrape(addr: SocketAddr, format: Format) -> anyhow::Result<Exposition> {
    let accept = match format {
        Format::OpenMetrics => "application/openmetrics-text; version=1.0.0",
        Format::PrometheusText => "*/*",
    };
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw).context("the response is not UTF-8")?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .context("no end of the response headers")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("GET /metrics answered {status}");
    }
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .context("no content type")?;
    let families = match format {
        Format::OpenMetrics => {
            if !content_type.starts_with("application/openmetrics-text") {
                bail!("asked for OpenMetrics, got {content_type}");
            }
            let parsed = parse_openmetrics(body).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            collect(parsed, |value| match value {
                OpenMetricsValue::Counter(c) => Some((number(&c.value), None)),
                OpenMetricsValue::Histogram(h) => Some((
                    h.count.unwrap_or_default() as f64,
                    h.sum.as_ref().map(number),
                )),
                OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => {
                    Some((number(n), None))
                }
                _ => None,
            })?
        }
        Format::PrometheusText => {
            if !content_type.starts_with("text/plain; version=0.0.4") {
                bail!("asked for the Prometheus text format, got {content_type}");
            }
            let parsed = parse_prometheus(body).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            collect(parsed, |value| match value {
                PrometheusValue::Counter(c) => Some((number(&c.value), None)),
                PrometheusValue::Histogram(h) => Some((
                    h.count.unwrap_or_default() as f64,
                    h.sum.as_ref().map(number),
                )),
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => Some((number(n), None)),
                _ => None,
            })?
        }
    };
    Ok(Exposition {
        families,
        text: body.to_owned(),
    })
}

/// The families of a parsed exposition, counters under their name without `_total`; `value`
/// reads a sample (its value, a histogram's count and sum), `None` for a type not expected.
fn collect<T, V>(
    parsed: openmetrics_parser::MetricsExposition<T, V>,
    value: impl Fn(&V) -> Option<(f64, Option<f64>)>,
) -> anyhow::Result<HashMap<String, (String, Vec<Sample>)>>
where
    T: std::fmt::Debug + Clone,
    V: std::fmt::Debug + openmetrics_parser::RenderableMetricValue + Clone,
{
    let mut families = HashMap::new();
    for (name, family) in parsed.families {
        let kind = format!("{:?}", family.family_type).to_lowercase();
        let names = family.get_label_names().to_vec();
        let mut samples = Vec::new();
        for sample in family.iter_samples() {
            let values: Vec<String> = sample
                .get_labelset()
                .map(|set| set.iter_values().cloned().collect())
                .unwrap_or_default();
            let Some((v, sum)) = value(&sample.value) else {
                bail!("{name}: an unexpected sample {:?}", sample.value);
            };
            samples.push(Sample {
                labels: names.iter().cloned().zip(values).collect(),
                value: v,
                sum,
            });
        }
        let name = name
            .strip_suffix("_total")
            .map(str::to_owned)
            .unwrap_or(name);
        families.insert(name, (kind, samples));
    }
    Ok(families)
}
