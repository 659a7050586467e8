//! Chat messages to a prompt, with the model's own chat template.
//!
//! Hugging Face models ship their prompt format as a Jinja template (`chat_template` in
//! tokenizer_config.json); rendering it as `transformers` does is the only way to give the
//! model the text it was trained on. So the environment is set up as `transformers` sets up
//! Jinja: `trim_blocks` and `lstrip_blocks`, the loop controls, Python's string methods
//! (`.strip()`, `.startswith()`, ...), and `raise_exception` for templates that refuse a
//! conversation, with `messages`, `add_generation_prompt`, `bos_token` and `eos_token`.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};

use crate::api::request::ChatMessage;

/// Why a conversation could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template called `raise_exception`: the conversation is not one it accepts.
    #[error("the model's chat template refused the conversation: {0}")]
    Refused(String),
    /// The template does not compile: the model's files are at fault, not the request.
    #[error("the model's chat template is not valid Jinja: {0}")]
    Invalid(String),
    /// Rendering failed otherwise (a message lacking what the template reads, ...).
    #[error("the model's chat template failed on this conversation: {0}")]
    Render(String),
}

/// The special tokens a template may read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialTokens<'a> {
    /// `bos_token`, when the tokenizer has one.
    pub bos: Option<&'a str>,
    /// `eos_token`, when the tokenizer has one.
    pub eos: Option<&'a str>,
}

/// Renders `messages` with `template`, ending with the prompt for the assistant's turn
/// (`add_generation_prompt=true`).
///
/// The template is compiled per call: templates are a few hundred bytes and compile in
/// microseconds, next to a generation's seconds, so a cache would only add state.
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    tokens: SpecialTokens<'_>,
) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    let compiled = env
        .template_from_str(template)
        .map_err(|err| TemplateError::Invalid(describe(&err)))?;

    let mut context: BTreeMap<&str, Value> = BTreeMap::new();
    context.insert("messages", Value::from_serialize(messages));
    context.insert("add_generation_prompt", Value::from(true));
    // Absent tokens stay undefined (as in transformers), not `none`, which would render.
    if let Some(bos) = tokens.bos {
        context.insert("bos_token", Value::from(bos));
    }
    if let Some(eos) = tokens.eos {
        context.insert("eos_token", Value::from(eos));
    }
    compiled
        .render(context)
        .map_err(|err| match (err.kind(), err.detail()) {
            (ErrorKind::InvalidOperation, Some(detail)) if detail.starts_with(RAISED) => {
                TemplateError::Refused(detail[RAISED.len()..].to_owned())
            }
            _ => TemplateError::Render(describe(&err)),
        })
}

/// Marks an error as the template's own `raise_exception`, not a fault of minijinja's.
const RAISED: &str = "raise_exception: ";

/// What HF templates call to refuse a conversation (roles not alternating, ...).
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

/// An error with its chain of causes, on one line.
fn describe(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's `chat_template`, as its tokenizer_config.json holds it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// A Llama-3-style template: BOS, a header per message, `.strip()`, Jinja whitespace
    /// control (`{%-`, `{{-`), `\n` escapes in its strings, and `raise_exception`.
    const LLAMA3: &str = r#"{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system = messages[0]['content'].strip() %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system = 'You are helpful.' %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' + system + '<|eot_id|>' }}
{%- for message in messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'].strip() + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn smollm2_adds_its_default_system_prompt() {
        let prompt = render(SMOLLM2, &[msg("user", "Hi!")], SpecialTokens::default()).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
             Hugging Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn smollm2_keeps_a_given_system_prompt() {
        let messages = [
            msg("system", "Be brief."),
            msg("user", "2+2?"),
            msg("assistant", "4"),
            msg("user", "3+3?"),
        ];
        let prompt = render(SMOLLM2, &messages, SpecialTokens::default()).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
             <|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama3_style_strips_and_uses_bos() {
        let tokens = SpecialTokens {
            bos: Some("<|begin_of_text|>"),
            eos: Some("<|eot_id|>"),
        };
        let messages = [msg("system", "  Be kind. \n"), msg("user", " Hello \n")];
        let prompt = render(LLAMA3, &messages, tokens).unwrap();
        assert_eq!(
            prompt,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let prompt = render(LLAMA3, &[msg("user", "x")], tokens).unwrap();
        assert_eq!(
            prompt,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.\
             <|eot_id|><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn raise_exception_refuses_with_the_templates_message() {
        let err = render(
            LLAMA3,
            &[msg("user", "a"), msg("user", "b")],
            SpecialTokens::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            TemplateError::Refused(
                "Conversation roles must alternate user/assistant/user/assistant/...".into()
            )
        );
    }

    #[test]
    fn a_broken_template_is_invalid_not_refused() {
        let err = render("{% for %}", &[msg("user", "a")], SpecialTokens::default()).unwrap_err();
        assert!(matches!(err, TemplateError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn absent_special_tokens_render_as_nothing() {
        let prompt = render(
            "[{{ bos_token }}]",
            &[msg("user", "a")],
            SpecialTokens::default(),
        );
        assert_eq!(prompt.unwrap(), "[]");
    }
}
