//! The browser app's Web Worker: loads the model and runs generation and training off the page's
//! thread. Built by trunk (`www/index.html`, `data-type="worker"`).

fn main() {
    alignlab::worker::main();
}
