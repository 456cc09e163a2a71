//! How a URL appears in logs, errors and the JSON document: without its
//! query string, fragment and user info, where tokens hide.

/// `https://user:pw@prov:8443/p.toml?token=x#f` → `https://prov:8443/p.toml`.
pub fn display(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// The same for text that may not parse (an unexpanded template, a typo).
pub fn display_str(raw: &str) -> String {
    if let Ok(u) = url::Url::parse(raw) {
        if !raw.contains("${") {
            return display(&u);
        }
    }
    let cut = raw.find(['?', '#']).unwrap_or(raw.len());
    let s = &raw[..cut];
    // Drop user info: between "://" and the first '@' before the path.
    if let Some(scheme_end) = s.find("://") {
        let auth_start = scheme_end + 3;
        let path_start = s[auth_start..]
            .find('/')
            .map_or(s.len(), |i| auth_start + i);
        if let Some(at) = s[auth_start..path_start].rfind('@') {
            return format!("{}{}", &s[..auth_start], &s[auth_start + at + 1..]);
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_fragment_and_user_info_never_show() {
        let u =
            url::Url::parse("https://ops:s3cret@prov.example:8443/p/r.toml?token=abc#x").unwrap();
        assert_eq!(display(&u), "https://prov.example:8443/p/r.toml");
        assert_eq!(
            display_str("https://ops:s3cret@prov/h/${mac}.toml?token=abc"),
            "https://prov/h/${mac}.toml"
        );
        assert_eq!(display_str("http://prov/x?t=1"), "http://prov/x");
        assert_eq!(display_str("not a url?t=1"), "not a url");
    }
}
