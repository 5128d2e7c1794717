//! `sluice send FILES...`: every message of every file over one MLLP connection, each ACK printed.

use sluice_ingest::mllp;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// MLLP listener address
    #[arg(long, default_value = "127.0.0.1:2575")]
    pub addr: String,
    pub files: Vec<std::path::PathBuf>,
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
    let mut stream = tokio::net::TcpStream::connect(&a.addr).await?;
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
