//! Every route and error case through the real router on a loopback port, with a scripted
//! network behind it.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::*;
use olc_gateway::{FinishReason, NetworkError, StreamEvent};
use serde_json::{Value, json};

const COMPLETIONS: &str = "/v1/completions";
const CHAT: &str = "/v1/chat/completions";

#[tokio::test]
async fn models_lists_bases_and_adapters() {
    let gateway = start(Double::new(hello()), None).await;
    let reply = http(gateway.addr, "GET", "/v1/models", &[], b"").await;
    assert_eq!(reply.status, 200);
    let list = reply.json();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["smollm2", "smollm2:poet", "raw", "strict"]);
    let base = &list["data"][0];
    assert_eq!(base["object"], "model");
    assert_eq!(base["created"], 1_700_000_000);
    assert_eq!(base["owned_by"], OWNER);
    assert!(base.get("parent").is_none());
    let adapter = &list["data"][1];
    assert_eq!(adapter["parent"], "smollm2");
    assert_eq!(
        adapter["chat"], true,
        "an adapter chats with its base's template"
    );
    assert_eq!(list["data"][2]["chat"], false);
}

#[tokio::test]
async fn a_completion_answers_whole_and_passes_its_parameters_on() {
    let double = Double::new(hello());
    let gateway = start(double.clone(), None).await;
    let reply = post(
        gateway.addr,
        COMPLETIONS,
        &json!({"model": "smollm2", "prompt": "Say hi", "temperature": 0, "top_p": 0.5,
                "seed": 42, "stop": "\n\n", "max_tokens": 30, "user": "ignored"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["id"], format!("cmpl-{JOB_ID}"));
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "smollm2");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "text": "Hello, world!", "finish_reason": "stop", "logprobs": null}])
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 4, "total_tokens": 11})
    );
    assert_eq!(
        body["olc"],
        json!({"job_id": JOB_ID, "workers": ["beef"], "commitment": "c0ffee"})
    );
    let request = double.request();
    assert_eq!(request.model, "smollm2");
    assert_eq!(request.adapter, None);
    assert_eq!(request.prompt, "Say hi");
    assert_eq!(request.max_tokens, 30);
    assert_eq!(request.temperature, 0.0);
    assert_eq!(request.top_p, 0.5);
    assert_eq!(request.seed, Some(42));
    assert_eq!(request.stop, ["\n\n"]);
}

#[tokio::test]
async fn completion_defaults_follow_openai() {
    let double = Double::new(script(&["x"], FinishReason::Length));
    let gateway = start(double.clone(), None).await;
    let reply = post(
        gateway.addr,
        COMPLETIONS,
        &json!({"model": "raw", "prompt": ["p"]}),
    )
    .await;
    assert_eq!(reply.json()["choices"][0]["finish_reason"], "length");
    let request = double.request();
    assert_eq!(
        (request.max_tokens, request.temperature, request.top_p),
        (16, 1.0, 1.0)
    );
    assert_eq!((request.seed, request.stop.len()), (None, 0));
}

#[tokio::test]
async fn a_chat_renders_the_template_and_names_the_adapter() {
    let double = Double::new(hello());
    let gateway = start(double.clone(), None).await;
    let reply = post(
        gateway.addr,
        CHAT,
        &json!({"model": "smollm2:poet", "max_completion_tokens": 12, "messages": [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            {"role": "user", "content": "A poem?", "name": "ignored"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["id"], format!("chatcmpl-{JOB_ID}"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "smollm2:poet");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "Hello, world!"},
                "finish_reason": "stop", "logprobs": null}])
    );
    assert_eq!(body["usage"]["total_tokens"], 11);
    assert_eq!(body["olc"]["job_id"], JOB_ID);
    let request = double.request();
    assert_eq!(request.model, "smollm2");
    assert_eq!(request.adapter.as_deref(), Some("poet"));
    assert_eq!(request.max_tokens, 12);
    assert_eq!(
        request.prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.\
         <|im_end|>\n<|im_start|>user\nA poem?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[tokio::test]
async fn chat_defaults_to_the_models_context() {
    let double = Double::new(hello());
    let gateway = start(double.clone(), None).await;
    let reply = post(
        gateway.addr,
        CHAT,
        &json!({"model": "strict", "messages": [{"role": "user", "content": "  hi  "}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let request = double.request();
    assert_eq!(request.max_tokens, 2048);
    assert_eq!(
        request.prompt, "<s>hi",
        "bos_token reached the template, .strip() works"
    );
}

/// The chunks of an SSE body, parsed, and whether it ended with `[DONE]`.
fn chunks(reply: &Reply) -> (Vec<Value>, bool) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.headers.contains("content-type: text/event-stream"),
        "{}",
        reply.headers
    );
    let mut events = reply.events();
    let done = events.last().is_some_and(|e| e == "[DONE]");
    if done {
        events.pop();
    }
    let chunks = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    (chunks, done)
}

#[tokio::test]
async fn a_streamed_chat_sends_a_chunk_per_delta_then_usage_then_done() {
    let gateway = start(Double::new(hello()), None).await;
    let reply = post(
        gateway.addr,
        CHAT,
        &json!({"model": "smollm2", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hi!"}]}),
    )
    .await;
    let (chunks, done) = chunks(&reply);
    assert!(done);
    assert_eq!(chunks.len(), DELTAS.len() + 2, "{chunks:?}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], format!("chatcmpl-{JOB_ID}"));
        assert_eq!(chunk["model"], "smollm2");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "Hello"})
    );
    for (chunk, delta) in chunks[1..].iter().zip(&DELTAS[1..]) {
        assert_eq!(chunk["choices"][0]["delta"], json!({"content": delta}));
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    let last = &chunks[DELTAS.len()];
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["olc"]["commitment"], "c0ffee");
    let usage = &chunks[DELTAS.len() + 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11})
    );
}

#[tokio::test]
async fn a_streamed_completion_without_usage_ends_at_the_finish_reason() {
    let gateway = start(Double::new(hello()), None).await;
    let reply = post(
        gateway.addr,
        COMPLETIONS,
        &json!({"model": "smollm2", "prompt": "p", "stream": true}),
    )
    .await;
    let (chunks, done) = chunks(&reply);
    assert!(done);
    let texts: Vec<&str> = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Hello", ",", " world", "!", ""]);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "text_completion" && c.get("usage").is_none())
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn a_stop_string_across_deltas_trims_and_cancels() {
    let deltas = [
        "The answer",
        " is 4",
        "2.\n",
        "\nQ: more",
        " text",
        " that",
        " never",
        " comes",
    ];
    let double = Double::new(script(&deltas, FinishReason::Length));
    let gateway = start(double.clone(), None).await;
    let reply = post(
        gateway.addr,
        COMPLETIONS,
        &json!({"model": "smollm2", "prompt": "Q: 6*7?", "stop": ["\n\n", "###"]}),
    )
    .await;
    let body = reply.json();
    assert_eq!(body["choices"][0]["text"], "The answer is 42.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    assert_eq!(body["olc"]["job_id"], JOB_ID);
    double.wait_cancelled().await;

    // The same, streamed: the held-back "\n" never goes out.
    let double = Double::new(script(&deltas, FinishReason::Length));
    let gateway = start(double.clone(), None).await;
    let reply = post(
        gateway.addr,
        CHAT,
        &json!({"model": "smollm2", "stream": true, "stop": "\n\n",
                "messages": [{"role": "user", "content": "6*7?"}]}),
    )
    .await;
    let (chunks, done) = chunks(&reply);
    assert!(done);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "The answer is 42.");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    double.wait_cancelled().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_job() {
    let deltas: Vec<String> = (0..1000).map(|i| format!("t{i} ")).collect();
    let deltas: Vec<&str> = deltas.iter().map(String::as_str).collect();
    let double = Double::new(script(&deltas, FinishReason::Length));
    let gateway = start(double.clone(), None).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let body = r#"{"model":"smollm2","prompt":"p","stream":true}"#;
    let request = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(stream);
    double.wait_cancelled().await;
}

#[tokio::test]
async fn network_errors_map_to_statuses() {
    let cases = [
        (
            NetworkError::UnknownModel("gone".into()),
            404,
            "model_not_found",
        ),
        (
            NetworkError::BadRequest {
                message: "the prompt is 5000 tokens; the context is 2048".into(),
                param: Some("prompt".into()),
            },
            400,
            "invalid_value",
        ),
        (
            NetworkError::NoWorker("no worker has 24 GiB free".into()),
            503,
            "no_worker",
        ),
        (
            NetworkError::InsufficientBalance("needs 10, has 2".into()),
            402,
            "insufficient_quota",
        ),
        (
            NetworkError::Unavailable("coordinator unreachable".into()),
            502,
            "network_unavailable",
        ),
    ];
    for (err, status, code) in cases {
        let gateway = start(Double::new(Script::Refuse(err.clone())), None).await;
        let reply = post(
            gateway.addr,
            COMPLETIONS,
            &json!({"model": "smollm2", "prompt": "p"}),
        )
        .await;
        let error = reply.error(status);
        assert_eq!(error["code"], code);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&err.to_string()),
            "{error}"
        );
        if status == 400 {
            assert_eq!(error["param"], "prompt");
            // A chat request's prompt is its messages.
            let reply = post(
                gateway.addr,
                CHAT,
                &json!({"model": "smollm2", "messages": [{"role": "user", "content": "p"}]}),
            )
            .await;
            assert_eq!(reply.error(400)["param"], "messages");
        }
    }
    let gateway = start(
        Double::new(Script::Refuse(NetworkError::Internal("bug".into()))),
        None,
    )
    .await;
    let reply = post(
        gateway.addr,
        COMPLETIONS,
        &json!({"model": "smollm2", "prompt": "p"}),
    )
    .await;
    assert_eq!(reply.error(500)["type"], "server_error");
}

#[tokio::test]
async fn a_failure_mid_stream_is_the_last_event() {
    let script = Script::Events(vec![
        StreamEvent::Text("par".into()),
        StreamEvent::Failed(NetworkError::Unavailable("the worker left".into())),
    ]);
    let gateway = start(Double::new(script), None).await;
    let reply = post(
        gateway.addr,
        COMPLETIONS,
        &json!({"model": "smollm2", "prompt": "p", "stream": true}),
    )
    .await;
    let events = reply.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the worker left")
    );

    // Not streamed: the failure is the answer.
    let script = Script::Events(vec![StreamEvent::Failed(NetworkError::NoWorker(
        "none".into(),
    ))]);
    let gateway = start(Double::new(script), None).await;
    let reply = post(
        gateway.addr,
        COMPLETIONS,
        &json!({"model": "smollm2", "prompt": "p"}),
    )
    .await;
    reply.error(503);
}

/// Posts `body` and returns the error object, checking the status.
async fn refused(path: &str, body: Value, status: u16) -> Value {
    let double = Double::new(hello());
    let gateway = start(double.clone(), None).await;
    let error = post(gateway.addr, path, &body).await.error(status);
    assert!(
        double.requests.lock().unwrap().is_empty(),
        "nothing reached the network"
    );
    error
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_the_param() {
    let base = json!({"model": "smollm2", "prompt": "p"});
    let cases = [
        ("n", json!(2), "n"),
        ("max_tokens", json!(0), "max_tokens"),
        ("max_completion_tokens", json!(-3), "max_completion_tokens"),
        ("temperature", json!(-1), "temperature"),
        ("temperature", json!(2.1), "temperature"),
        ("top_p", json!(0), "top_p"),
        ("top_p", json!(1.5), "top_p"),
        ("stop", json!(["a", "b", "c", "d", "e"]), "stop"),
        ("stop", json!(7), "stop"),
        ("temperature", json!("hot"), "temperature"),
        ("max_tokens", json!(1.5), "max_tokens"),
        ("stream", json!("yes"), "stream"),
        ("seed", json!("x"), "seed"),
        ("prompt", json!(["a", "b"]), "prompt"),
        ("prompt", json!([1, 2, 3]), "prompt"),
        ("prompt", json!(12), "prompt"),
        ("model", json!(12), "model"),
        (
            "stream_options",
            json!({"include_usage": 1}),
            "stream_options.include_usage",
        ),
    ];
    for (field, value, param) in cases {
        let mut body = base.clone();
        body[field] = value.clone();
        let error = refused(COMPLETIONS, body, 400).await;
        assert_eq!(error["param"], param, "{field}={value}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
    }
    let error = refused(COMPLETIONS, json!({"model": "smollm2"}), 400).await;
    assert_eq!(error["param"], "prompt");
    let error = refused(COMPLETIONS, json!({"prompt": "p"}), 400).await;
    assert_eq!(error["param"], "model");
    let error = refused(CHAT, json!({"model": "smollm2", "messages": []}), 400).await;
    assert_eq!(error["param"], "messages");
    let error = refused(
        CHAT,
        json!({"model": "smollm2", "messages": [{"role": "user", "content": 5}]}),
        400,
    )
    .await;
    assert_eq!(error["param"], "messages[0]");
}

#[tokio::test]
async fn bad_bodies_are_400s_in_openais_shape() {
    let gateway = start(Double::new(hello()), None).await;
    for body in [
        &b"{\"model\": \"smollm2\", "[..],
        b"[1, 2]",
        b"",
        b"\xff\xfe",
    ] {
        let reply = http(
            gateway.addr,
            "POST",
            COMPLETIONS,
            &[("content-type", "application/json")],
            body,
        )
        .await;
        let error = reply.error(400);
        assert_eq!(error["type"], "invalid_request_error");
    }
    // No content type at all (curl -d sends a form type): still read as JSON.
    let reply = http(
        gateway.addr,
        "POST",
        COMPLETIONS,
        &[],
        br#"{"model":"raw","prompt":"p"}"#,
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let gateway = start(Double::new(hello()), None).await;
    let prompt = "x".repeat(olc_gateway::MAX_BODY_BYTES);
    let reply = post(
        gateway.addr,
        COMPLETIONS,
        &json!({"model": "smollm2", "prompt": prompt}),
    )
    .await;
    let error = reply.error(413);
    assert!(error["message"].as_str().unwrap().contains("limit"));
}

#[tokio::test]
async fn model_errors() {
    let error = refused(COMPLETIONS, json!({"model": "nope", "prompt": "p"}), 404).await;
    assert_eq!(
        (error["code"].clone(), error["param"].clone()),
        (json!("model_not_found"), json!("model"))
    );
    refused(
        COMPLETIONS,
        json!({"model": "raw:poet", "prompt": "p"}),
        404,
    )
    .await;
    refused(COMPLETIONS, json!({"model": "poet", "prompt": "p"}), 404).await;
    let error = refused(
        CHAT,
        json!({"model": "raw", "messages": [{"role": "user", "content": "hi"}]}),
        400,
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no chat template"),
        "{error}"
    );
    let error = refused(
        CHAT,
        json!({"model": "strict", "messages": [
            {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        400,
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("only one message, please"),
        "{error}"
    );
    assert_eq!(error["param"], "messages");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_openais_shape() {
    let gateway = start(Double::new(hello()), None).await;
    let reply = http(gateway.addr, "GET", "/v1/engines", &[], b"").await;
    assert_eq!(reply.error(404)["code"], "unknown_url");
    let reply = http(gateway.addr, "GET", COMPLETIONS, &[], b"").await;
    reply.error(405);
}

#[tokio::test]
async fn configured_keys_are_required() {
    let double = Double::new(hello());
    let gateway = start(double.clone(), Some(&["sk-good", "sk-other"])).await;
    let body = br#"{"model":"smollm2","prompt":"p"}"#;
    let reply = http(gateway.addr, "POST", COMPLETIONS, &[], body).await;
    assert_eq!(reply.error(401)["code"], "invalid_api_key");
    let reply = http(
        gateway.addr,
        "POST",
        COMPLETIONS,
        &[("authorization", "Bearer sk-bad")],
        body,
    )
    .await;
    assert_eq!(reply.error(401)["code"], "invalid_api_key");
    let reply = http(gateway.addr, "GET", "/v1/models", &[], b"").await;
    reply.error(401);
    let reply = http(
        gateway.addr,
        "POST",
        COMPLETIONS,
        &[("authorization", "Bearer sk-good")],
        body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        double.requests.lock().unwrap().len(),
        1,
        "only the good key reached the network"
    );

    // Without keys configured, any key (or none) is accepted.
    let gateway = start(Double::new(hello()), None).await;
    let reply = http(
        gateway.addr,
        "GET",
        "/v1/models",
        &[("authorization", "Bearer whatever")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn serve_returns_when_shutdown_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(olc_gateway::serve(
        listener,
        Double::new(hello()),
        olc_gateway::GatewayConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    assert_eq!(http(addr, "GET", "/v1/models", &[], b"").await.status, 200);
    stop.send(()).unwrap();
    let served = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    served.unwrap().unwrap().unwrap();
}
