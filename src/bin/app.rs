//! The browser app's page (Leptos). Built by trunk from `www/index.html`.

fn main() {
    alignlab::app::main();
}
