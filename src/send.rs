//! `sluice send FILES...`: every message of every file over one MLLP connection, each ACK
//! printed; with `--fhir URL`, each file (a FHIR R4 resource or Bundle, JSON or XML) POSTed to
//! the FHIR endpoint and each answer printed.

use crate::client::ClientTls;
use sluice_ingest::mllp;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// MLLP listener address
    #[arg(long, default_value = "127.0.0.1:2575")]
    pub addr: String,
    /// POST each file to this FHIR endpoint (for example https://127.0.0.1:8080/fhir) instead
    #[arg(long)]
    pub fhir: Option<String>,
    /// Bearer token for the FHIR endpoint (the sender role)
    #[arg(long, env = "SLUICE_SENDER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Connect over TLS, trusting this CA (PEM) for the server's certificate
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --tls-key
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    pub files: Vec<std::path::PathBuf>,
}

/// POSTs one FHIR body; returns the HTTP status and the OperationOutcome's reason code.
pub async fn post_fhir(client: &reqwest::Client, url: &str, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
    let xml = sluice_fhir::Format::sniff(&body) == Some(sluice_fhir::Format::Xml);
    let r = client
        .post(url)
        .header("content-type", if xml { "application/fhir+xml" } else { "application/fhir+json" })
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let outcome: serde_json::Value = r.json().await.unwrap_or_default();
    let reason = outcome["issue"][0]["details"]["coding"][0]["code"]
        .as_str()
        .unwrap_or("-")
        .to_owned();
    Ok((status, reason))
}

async fn run_fhir(url: &str, files: &[std::path::PathBuf], tls: Option<&ClientTls>, token: Option<&str>) -> anyhow::Result<()> {
    let client = crate::client::http_client(tls, token)?;
    let (mut ok, mut not) = (0, 0);
    for f in files {
        let (status, reason) = post_fhir(&client, url, std::fs::read(f)?).await?;
        println!("{} {status} {reason}", f.display());
        if status == 202 { ok += 1 } else { not += 1 }
    }
    println!("{ok} accepted, {not} not accepted");
    Ok(())
}

/// The messages of a file: split on MSH; a file without one is sent whole (so it gets its NAK).
pub fn messages_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    let msgs = sluice_hl7::split_messages(bytes);
    if msgs.is_empty() {
        vec![bytes.to_vec()]
    } else {
        msgs.into_iter().map(<[u8]>::to_vec).collect()
    }
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let tls = a.tls_ca.as_ref().map(|ca| ClientTls {
        ca_file: ca.clone(),
        cert_file: a.tls_cert.clone(),
        key_file: a.tls_key.clone(),
    });
    if let Some(url) = &a.fhir {
        return run_fhir(url, &a.files, tls.as_ref(), a.token.as_deref()).await;
    }
    let mut stream = crate::client::mllp_connect(&a.addr, tls.as_ref()).await?;
    let (mut ok, mut nak) = (0, 0);
    for f in &a.files {
        let bytes = std::fs::read(f)?;
        for (i, m) in messages_of(&bytes).iter().enumerate() {
            let ack = mllp::send_one(&mut stream, m, Duration::from_secs(60)).await?;
            let code = mllp::ack_code(&ack);
            let parsed = sluice_hl7::Message::parse(&ack);
            let control = parsed
                .find("MSA", 0)
                .map(|s| String::from_utf8_lossy(s.field(2).raw()).into_owned())
                .unwrap_or_default();
            let err = parsed
                .find("ERR", 0)
                .map(|s| String::from_utf8_lossy(s.field(3).raw()).into_owned())
                .unwrap_or_default();
            println!(
                "{}#{} {} {} {}",
                f.display(),
                i + 1,
                if control.is_empty() { "-" } else { &control },
                code,
                err
            );
            if code == "AA" { ok += 1 } else { nak += 1 }
        }
    }
    println!("{ok} accepted, {nak} not accepted");
    Ok(())
}
