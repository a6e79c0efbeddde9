//! What the page's address asks for (`?model=`, `?lab=`, `?set=`, `?backend=`), and asking before
//! another site is contacted.

pub(super) fn query(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

/// The origin of `url` when it is not the page's own: a link can name any server's model.
pub(super) fn foreign_origin(url: &str) -> Option<String> {
    let own = web_sys::window()?.location().origin().ok()?;
    let origin = web_sys::Url::new(url).ok()?.origin();
    (origin != own).then_some(origin)
}

/// Asks before the page contacts another site for a model a link names.
pub(super) fn confirm_foreign(origin: &str) -> bool {
    let ask = format!(
        "This link asks the lab to download a model from {origin}, a site other than this one.\n\n\
         Load it? (Cancel: nothing is downloaded from that site.)"
    );
    web_sys::window().and_then(|w| w.confirm_with_message(&ask).ok()).unwrap_or(false)
}

/// Asks before the page fetches a lab file from another site.
pub(super) fn confirm_foreign_lab(origin: &str) -> bool {
    let ask = format!(
        "This link opens a lesson (lab file) from {origin}, a site other than this one. A lab file can change \
         your settings and add examples to your data (nothing is deleted).\n\nOpen it? (Cancel: nothing is downloaded from that site.)"
    );
    web_sys::window().and_then(|w| w.confirm_with_message(&ask).ok()).unwrap_or(false)
}

/// An absolute URL for `path`, relative to the page (the worker resolves against its script).
pub(super) fn absolute(path: &str) -> String {
    let base = web_sys::window().and_then(|w| w.document()).and_then(|d| d.base_uri().ok().flatten()).unwrap_or_default();
    web_sys::Url::new_with_base(path, &base).map(|u| u.href()).unwrap_or_else(|_| path.to_string())
}
