//! Shared by the gateway's integration tests: a scripted [`Network`] double, a gateway on a
//! loopback port, and a small HTTP/1.1 client that returns the exact bytes.
#![allow(dead_code)] // each test binary uses its own part of this
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use olc_gateway::{
    CatalogModel, FinishReason, GatewayConfig, GenerateRequest, Generation, ModelKind, Network,
    NetworkError, StreamEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// SmolLM2-135M-Instruct's chat template.
pub const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A template that refuses anything but a single user message.
pub const STRICT_TEMPLATE: &str = "{% if messages|length != 1 %}{{ raise_exception('only one message, please') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip() }}";

pub const OWNER: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
pub const JOB_ID: &str = "0f0f";
pub const PROMPT_TOKENS: u32 = 7;

/// What the double does with a generation.
#[derive(Debug, Clone)]
pub enum Script {
    /// Sends these events, one at a time.
    Events(Vec<StreamEvent>),
    /// Refuses to start.
    Refuse(NetworkError),
}

/// The test double: a fixed catalog, a scripted stream, and a record of what it was asked.
#[derive(Debug)]
pub struct Double {
    pub script: Mutex<Script>,
    pub requests: Mutex<Vec<GenerateRequest>>,
    /// Set when the gateway dropped the receiver before the script was sent.
    pub cancelled: Arc<AtomicBool>,
}

/// The deltas of the default script: "Hello, world!".
pub const DELTAS: &[&str] = &["Hello", ",", " world", "!"];

/// The default script: [`DELTAS`], then a normal end.
pub fn hello() -> Script {
    script(DELTAS, FinishReason::Stop)
}

/// `deltas` then `Done`.
pub fn script(deltas: &[&str], finish_reason: FinishReason) -> Script {
    let mut events: Vec<StreamEvent> = deltas
        .iter()
        .map(|d| StreamEvent::Text(d.to_string()))
        .collect();
    events.push(StreamEvent::Done {
        finish_reason,
        completion_tokens: deltas.len() as u32,
        workers: vec!["beef".into()],
        commitment: "c0ffee".into(),
    });
    Script::Events(events)
}

impl Double {
    pub fn new(script: Script) -> Arc<Self> {
        Arc::new(Double {
            script: Mutex::new(script),
            requests: Mutex::new(Vec::new()),
            cancelled: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The one request the double got.
    pub fn request(&self) -> GenerateRequest {
        let requests = self.requests.lock().unwrap();
        assert_eq!(requests.len(), 1, "{requests:?}");
        requests[0].clone()
    }

    /// Waits (a bounded while) for the gateway to have cancelled the generation.
    pub async fn wait_cancelled(&self) {
        for _ in 0..200 {
            if self.cancelled.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the gateway did not drop the receiver");
    }
}

fn model(name: &str, kind: ModelKind, template: Option<&str>) -> CatalogModel {
    CatalogModel {
        name: name.into(),
        kind,
        created: 1_700_000_000,
        owner: OWNER.into(),
        chat_template: template.map(str::to_owned),
        bos_token: Some("<s>".into()),
        eos_token: Some("<|im_end|>".into()),
        context_length: 2048,
    }
}

/// The catalog: a chat model, an adapter over it, a model with no template, and one whose
/// template refuses most conversations.
pub fn catalog() -> Vec<CatalogModel> {
    vec![
        model("smollm2", ModelKind::Base, Some(SMOLLM2_TEMPLATE)),
        model(
            "poet",
            ModelKind::Adapter {
                base: "smollm2".into(),
            },
            None,
        ),
        model("raw", ModelKind::Base, None),
        model("strict", ModelKind::Base, Some(STRICT_TEMPLATE)),
    ]
}

impl Network for Double {
    fn models(&self) -> BoxFuture<'_, Result<Vec<CatalogModel>, NetworkError>> {
        Box::pin(async { Ok(catalog()) })
    }

    fn generate(
        &self,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<Generation, NetworkError>> {
        self.requests.lock().unwrap().push(request);
        let script = self.script.lock().unwrap().clone();
        let cancelled = self.cancelled.clone();
        Box::pin(async move {
            let events = match script {
                Script::Refuse(err) => return Err(err),
                Script::Events(events) => events,
            };
            // Capacity 1: the sender runs at most one event ahead of the gateway, so a
            // gateway that stops reading shows as a failed send.
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for event in events {
                    if tx.send(event).await.is_err() {
                        cancelled.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                // Sent everything: a cancel now shows as the channel closing.
                tokio::select! {
                    _ = tx.closed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            });
            Ok(Generation {
                job_id: JOB_ID.into(),
                prompt_tokens: PROMPT_TOKENS,
                events: rx,
            })
        })
    }
}

/// A gateway on a loopback port; stops when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn start(network: Arc<Double>, api_keys: Option<&[&str]>) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = GatewayConfig {
        api_keys: api_keys.map(|keys| keys.iter().map(|k| k.to_string()).collect::<HashSet<_>>()),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(olc_gateway::serve(listener, network, config, async {
        let _ = stopped.await;
    }));
    Gateway {
        addr,
        stop: Some(stop),
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The header block, lower-cased.
    pub headers: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    /// The `data:` payloads of an SSE body.
    pub fn events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| event.strip_prefix("data: ").unwrap_or(event).to_owned())
            .collect()
    }

    /// Asserts OpenAI's error shape and returns the error object.
    pub fn error(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(
            self.headers.contains("content-type: application/json"),
            "{}",
            self.headers
        );
        let error = self.json()["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(error.get(key).is_some(), "no `{key}` in {error}");
        }
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        error
    }
}

/// One request on its own connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // A server may answer (413) before reading all of a large body and close.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("the gateway answered in time")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let headers = String::from_utf8(raw[..split].to_vec())
        .unwrap()
        .to_lowercase();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// A JSON POST.
pub async fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Reply {
    let body = serde_json::to_vec(body).unwrap();
    http(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        &body,
    )
    .await
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
