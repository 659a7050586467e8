//! Real clients against the gateway: curl, and the official `openai` Python package.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use std::process::{Command, Output};

use common::*;

/// Runs a command off the runtime (the gateway serves on it meanwhile).
async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("could not run the client: {err}"))
}

/// `"created":<digits>` made `"created":0`, so the bytes compare exactly.
fn without_created(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\"created\":") {
        let (head, tail) = rest.split_at(at + "\"created\":".len());
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

fn curl(args: &[&str]) -> Command {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "20"]).args(args);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_a_completion() {
    let gateway = start(Double::new(hello()), None).await;
    let url = format!("http://{}/v1/completions", gateway.addr);
    let out = run(curl(&[
        &url,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"model":"smollm2","prompt":"Say hi","max_tokens":8}"#,
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        without_created(&String::from_utf8(out.stdout).unwrap()),
        concat!(
            r#"{"id":"cmpl-0f0f","object":"text_completion","created":0,"model":"smollm2","#,
            r#""choices":[{"index":0,"text":"Hello, world!","finish_reason":"stop","logprobs":null}],"#,
            r#""usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11},"#,
            r#""olc":{"job_id":"0f0f","workers":["beef"],"commitment":"c0ffee"}}"#
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_streams_a_chat_completion() {
    let gateway = start(Double::new(hello()), None).await;
    let url = format!("http://{}/v1/chat/completions", gateway.addr);
    let out = run(curl(&[
        "-N",
        &url,
        "-H",
        "Content-Type: application/json",
        "-H",
        "Authorization: Bearer anything",
        "-d",
        r#"{"model":"smollm2","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"Hi!"}]}"#,
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = r#"{"id":"chatcmpl-0f0f","object":"chat.completion.chunk","created":0,"model":"smollm2","choices":"#;
    let expected = [
        format!(
            r#"{head}[{{"index":0,"delta":{{"role":"assistant","content":"Hello"}},"finish_reason":null,"logprobs":null}}]}}"#
        ),
        format!(
            r#"{head}[{{"index":0,"delta":{{"content":","}},"finish_reason":null,"logprobs":null}}]}}"#
        ),
        format!(
            r#"{head}[{{"index":0,"delta":{{"content":" world"}},"finish_reason":null,"logprobs":null}}]}}"#
        ),
        format!(
            r#"{head}[{{"index":0,"delta":{{"content":"!"}},"finish_reason":null,"logprobs":null}}]}}"#
        ),
        format!(
            r#"{head}[{{"index":0,"delta":{{}},"finish_reason":"stop","logprobs":null}}],"olc":{{"job_id":"0f0f","workers":["beef"],"commitment":"c0ffee"}}}}"#
        ),
        format!(
            r#"{head}[],"usage":{{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}}}"#
        ),
        "[DONE]".to_owned(),
    ];
    let expected: String = expected
        .iter()
        .map(|data| format!("data: {data}\n\n"))
        .collect();
    assert_eq!(
        without_created(&String::from_utf8(out.stdout).unwrap()),
        expected
    );
}

/// The official client, through tests/openai_client.py. Fails (does not skip) when Python
/// or the `openai` package is missing: the API's compatibility is what this checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_works() {
    let gateway = start(Double::new(hello()), None).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let base_url = format!("http://{}/v1", gateway.addr);
    let mut command = Command::new("python3");
    command.args([script, "--base-url", &base_url]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| {
            panic!("python3 could not be run ({err}): install Python 3, then `pip install openai`")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "the `openai` Python package is missing: pip install openai\n{stderr}"
    );
    assert!(
        out.status.success(),
        "openai_client.py failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.trim(), "ok", "{stderr}");
}
