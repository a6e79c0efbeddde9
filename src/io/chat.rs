//! Chat formatting with the checkpoint's own Jinja template, rendered by minijinja with the same
//! settings transformers uses (`trim_blocks`, `lstrip_blocks`, loop controls, Python methods).

use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
    pub fn system(content: &str) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: &str) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: &str) -> Self {
        Self::new("assistant", content)
    }
}

#[derive(Clone, Debug)]
pub struct ChatTemplate {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: impl Into<String>, bos_token: impl Into<String>, eos_token: impl Into<String>) -> Self {
        Self { source: source.into(), bos_token: bos_token.into(), eos_token: eos_token.into() }
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// answer begins. The template comes from the model file, so it runs on a budget: a bounded
    /// source, [`TEMPLATE_FUEL`] instructions, a shallow recursion limit, and at most
    /// [`MAX_RENDERED_BYTES`] of output (written through a counting writer, never all at once).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if self.source.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::Template(format!(
                "the model's chat template is {} KB, more than the {} KB any real template needs; the \
                 file is corrupt or hostile (run without the chat template)",
                self.source.len() / 1024,
                MAX_TEMPLATE_BYTES / 1024
            )));
        }
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(64);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.source)
            .map_err(|e| Error::Template(format!("the model's chat template does not parse: {e}")))?;
        let tmpl = env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        let mut out = Capped(Vec::new());
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        tmpl.render_captured_to(ctx, &mut out).map_err(|e| {
            let why = match e.kind() {
                ErrorKind::OutOfFuel => "it ran too long (a loop that does not end?)".to_string(),
                ErrorKind::WriteFailure => format!("its output passed {} KB", MAX_RENDERED_BYTES / 1024),
                _ => e.to_string(),
            };
            Error::Template(format!("rendering the model's chat template failed: {why}"))
        })?;
        String::from_utf8(out.0).map_err(|_| Error::Template("the chat template wrote invalid UTF-8".into()))
    }
}

/// Longest template source accepted (real ones are a few KB; tool-calling ones up to ~20 KB).
const MAX_TEMPLATE_BYTES: usize = 256 << 10;
/// Instructions a render may run: a conversation of a few turns takes a few thousand.
const TEMPLATE_FUEL: u64 = 2_000_000;
/// Longest rendered prompt (a model's whole context is well under this).
const MAX_RENDERED_BYTES: usize = 4 << 20;

/// A writer that refuses to grow past [`MAX_RENDERED_BYTES`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other("chat template output too long"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_default_system() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>");
        let s = t.render(&[Message::user("Hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let s = t.render(&[Message::system("Be brief."), Message::user("Hi")], false).unwrap();
        assert_eq!(s, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn hostile_templates_stop_with_an_error() {
        let run = |src: &str| ChatTemplate::new(src, "", "").render(&[Message::user("hi")], true).unwrap_err().to_string();
        let nested = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
        assert!(run(nested).contains("too long") || run(nested).contains("ran too long"), "{}", run(nested));
        let huge = "{% for a in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";
        assert!(run(huge).contains("output passed"), "{}", run(huge));
        let recursive = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        assert!(run(recursive).contains("failed"), "{}", run(recursive));
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let src = "{% if messages[0].role == 'bot' %}{{ raise_exception('roles must alternate') }}{% endif %}{{ messages[0].content.strip().upper() }}";
        let t = ChatTemplate::new(src, "", "");
        assert_eq!(t.render(&[Message::user("  hi ")], false).unwrap(), "HI");
        let err = t.render(&[Message::new("bot", "x")], false).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }
}
