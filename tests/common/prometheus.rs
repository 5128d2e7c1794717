//! A real Prometheus (the binary from `.tools`) scraping every service of a [`Pipeline`] each
//! second, with the chart's alerting rules loaded: what an SRE would see.

use super::{Pipeline, Proc, SERVICES, free_port, repo, tool};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    _proc: Proc,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub async fn start(p: &Pipeline) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = SERVICES
            .iter()
            .map(|s| format!("'{}'", p.metrics_url(s).trim_start_matches("http://").trim_end_matches("/metrics")))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [{}]\n",
            repo().join("helm/sluice/files/prometheus-rules.yml").display(),
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new(tool("bin/prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(format!("{url}/-/ready")).await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Prometheus {
            _proc: Proc { child },
            url,
            _dir: dir,
        }
    }

    /// The value of an instant query that returns one number (the sum over series).
    pub async fn value(&self, query: &str) -> Option<f64> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let results = v["data"]["result"].as_array()?;
        if results.is_empty() {
            return None;
        }
        Some(
            results
                .iter()
                .filter_map(|r| r["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()))
                .sum(),
        )
    }

    /// Waits until `query` returns a value for which `ok` holds.
    pub async fn wait_for(&self, query: &str, ok: impl Fn(f64) -> bool, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.value(query).await;
            if let Some(v) = v
                && ok(v)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "prometheus query {query} never held (last {v:?})");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Prometheus {
    /// The raw answer of an instant query (`data.result` on success, the error text otherwise).
    pub async fn query(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}
