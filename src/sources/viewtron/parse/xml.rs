//! A tiny read-only DOM over `quick_xml::Reader`.
//!
//! Only what the Viewtron parser needs: local names (namespace prefixes dropped), attributes,
//! the text directly inside an element (plain text, CDATA and character references joined and
//! trimmed) and child elements. Text borrows from the input wherever it can, so a 500 KB
//! base64 image is never copied while the tree is built.
//!
//! Safety limits: DOCTYPE (and therefore entity declarations) is refused, nesting depth and
//! node count are capped. Anything after the root element closes is ignored (vendor samples
//! put whole commented-out documents there; some devices may pad the body).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::io::BufRead as _;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event as XmlEvent};

/// Maximum element nesting depth. Real posts nest at most 6 levels.
pub(crate) const MAX_DEPTH: usize = 64;
/// Maximum number of elements plus attributes in one document.
pub(crate) const MAX_NODES: usize = 200_000;
/// Text pieces this long (bytes) are not scanned for control characters while the tree is
/// built, but when their text is first asked for ([`Node::text`]). In camera posts they are
/// base64 images, read with [`Node::raw_text`] by a decoder that refuses every byte outside
/// its alphabet anyway: one pass less over about a megabyte per post.
const SCAN_LATER: usize = 4096;

/// One element.
#[derive(Debug, Default)]
pub(crate) struct Node<'a> {
    name: String,
    attrs: Vec<(String, Cow<'a, str>)>,
    text: Cow<'a, str>,
    /// A piece of `text` was not scanned for control characters ([`SCAN_LATER`]).
    unscanned: bool,
    /// `text` without its control characters, if it has any: made on first use.
    clean: OnceCell<Option<String>>,
    children: Vec<Node<'a>>,
}

/// Why the document could not be turned into a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DomError {
    /// Not well-formed XML.
    Syntax { position: u64, message: String },
    /// A DOCTYPE (possibly with entity declarations) was present.
    Dtd { position: u64 },
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More than [`MAX_NODES`] elements/attributes.
    TooManyNodes,
    /// No root element at all (only comments, declarations or whitespace).
    NoRoot,
}

struct Frame<'a> {
    node: Node<'a>,
    /// Whitespace seen after some text; only kept if more text follows.
    ws_tail: Cow<'a, str>,
}

impl<'a> Frame<'a> {
    fn push_text(&mut self, piece: Cow<'a, str>) {
        let piece = if piece.len() >= SCAN_LATER {
            self.node.unscanned = true;
            piece
        } else {
            strip_controls(piece)
        };
        if piece.is_empty() {
            return;
        }
        let blank = piece.bytes().all(|b| b.is_ascii_whitespace());
        if blank {
            // Leading whitespace and indentation between children never matter (values are
            // trimmed); keep it only as a possible separator between two text pieces.
            if !self.node.text.is_empty() {
                if self.ws_tail.is_empty() {
                    self.ws_tail = piece;
                } else {
                    self.ws_tail.to_mut().push_str(&piece);
                }
            }
            return;
        }
        if self.node.text.is_empty() {
            self.node.text = piece;
        } else {
            let text = self.node.text.to_mut();
            text.push_str(&self.ws_tail);
            text.push_str(&piece);
        }
        self.ws_tail = Cow::Borrowed("");
    }
}

/// Remove control characters other than ASCII whitespace (NUL, ESC, DEL, C1 controls) from
/// element text: device-provided names and plates end up in logs, JSON and Home Assistant, and
/// an escape sequence or NUL there only does harm. Borrowed text without any stays borrowed
/// (one byte scan, no copy of a large base64 image).
fn strip_controls(piece: Cow<'_, str>) -> Cow<'_, str> {
    let bad = |c: char| c.is_control() && !c.is_ascii_whitespace();
    if !may_hold_controls(piece.as_bytes()) || !piece.chars().any(bad) {
        return piece;
    }
    Cow::Owned(piece.chars().filter(|&c| !bad(c)).collect())
}

/// False when `text` (UTF-8) surely holds no control character other than ASCII whitespace:
/// no byte below 0x20 but TAB, LF, FF and CR, no DEL (0x7F), and no 0xC2 (the lead byte of
/// the C1 controls U+0080..U+009F, and of some printable Latin-1 letters, hence "may").
/// Written without an early exit per byte so that the compiler vectorises it: this runs over
/// every byte of a post's base64 images (about 1 MB), where a `char` loop cost a third of the
/// bridge's CPU.
fn may_hold_controls(text: &[u8]) -> bool {
    let suspect = |b: u8| {
        (b < 0x20 && !matches!(b, b'\t' | b'\n' | 0x0c | b'\r')) | (b == 0x7f) | (b == 0xc2)
    };
    text.chunks(64)
        .any(|chunk| chunk.iter().fold(false, |acc, &b| acc | suspect(b)))
}

/// Parse a whole document (already valid UTF-8, BOM removed) into its root element.
pub(crate) fn parse(doc: &str) -> Result<Node<'_>, DomError> {
    let mut reader = Reader::from_str(doc);
    let mut tree = TreeBuilder::default();
    loop {
        let event = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                return Err(DomError::Syntax {
                    position: reader.error_position(),
                    message: e.to_string(),
                });
            }
        };
        let opened = matches!(event, XmlEvent::Start(_));
        if let Some(root) = tree.feed(event, reader.buffer_position())? {
            return Ok(root);
        }
        if opened && let Some(text) = take_long_text(&mut reader, doc) {
            tree.inner(reader.buffer_position(), "text outside the root element")?
                .push_text(Cow::Borrowed(text));
        }
    }
}

/// Right after a start tag: the element's text up to the next markup, or the content of a
/// CDATA section that starts it (after optional whitespace), taken from `doc` past the reader
/// when it is at least [`SCAN_LATER`] bytes long; plain text must hold no reference (`&`).
/// `None` (nothing consumed) otherwise, and the reader reads the text as usual.
///
/// quick-xml (0.42) checks the UTF-8 of every text and CDATA event it returns
/// (`std::str::from_utf8`): over a post's base64 images that was 3–4 % of the bridge's CPU
/// per NVR post, a third of what decoding them costs, and 5.5 % per IPC post, whose images
/// come in CDATA sections (the IPC "HTTP POST" format, config 1.x), with another 2 % for its
/// search of the section's end (`perf`). `doc` is a `&str`, checked once already
/// (`simdutf8`), and the text ends where markup starts, on a character boundary. The bytes
/// are skipped through [`Reader::stream`], quick-xml's way of reading raw input in the
/// middle of a document: its position and its check of end-tag names stay right. Whitespace
/// before the section is dropped, as the tree drops an element's leading whitespace anyway.
fn take_long_text<'a>(reader: &mut Reader<&'a [u8]>, doc: &'a str) -> Option<&'a str> {
    const CDATA_OPEN: &[u8] = b"<![CDATA[";
    const CDATA_CLOSE: &[u8] = b"]]>";
    let mut input = reader.stream();
    let start = doc.len() - input.fill_buf().ok()?.len();
    let rest = doc.as_bytes().get(start..)?;
    let lead = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
    if let Some(section) = rest[lead..].strip_prefix(CDATA_OPEN) {
        // The first `>` preceded by `]]`: one `memchr` pass over base64, which holds no `>`
        // (2.7 % of the bridge's CPU per IPC post against 6.8 % for `memmem`, `perf`).
        let len = memchr::memchr_iter(b'>', section)
            .find(|&i| i >= 2 && &section[i - 2..i] == b"]]")?
            - 2;
        if len < SCAN_LATER {
            return None;
        }
        let from = start + lead + CDATA_OPEN.len();
        let text = doc.get(from..from + len)?;
        input.consume(lead + CDATA_OPEN.len() + len + CDATA_CLOSE.len());
        return Some(text);
    }
    let len = memchr::memchr2(b'<', b'&', rest).filter(|&i| rest[i] == b'<')?;
    if len < SCAN_LATER {
        return None;
    }
    let text = doc.get(start..start + len)?;
    input.consume(len);
    Some(text)
}

/// The open elements while a document is read, innermost last.
#[derive(Default)]
struct TreeBuilder<'a> {
    stack: Vec<Frame<'a>>,
    /// Elements plus attributes so far.
    nodes: usize,
}

impl<'a> TreeBuilder<'a> {
    /// Take one reader event (`position`: the reader's offset after it). `Some(root)` once the
    /// root element is closed.
    fn feed(&mut self, event: XmlEvent<'a>, position: u64) -> Result<Option<Node<'a>>, DomError> {
        match event {
            XmlEvent::Start(start) => {
                let node = self.element(&start, position)?;
                self.stack.push(Frame {
                    node,
                    ws_tail: Cow::Borrowed(""),
                });
                Ok(None)
            }
            XmlEvent::Empty(start) => {
                let node = self.element(&start, position)?;
                Ok(self.attach(node))
            }
            XmlEvent::End(_) => {
                // quick-xml checks that the end name matches the open element.
                let frame = self
                    .stack
                    .pop()
                    .ok_or_else(|| syntax(position, "end tag without start tag"))?;
                Ok(self.attach(frame.node))
            }
            XmlEvent::Text(text) => {
                let piece = text.into_inner();
                match self.stack.last_mut() {
                    Some(frame) => frame.push_text(piece),
                    None if piece.bytes().all(|b| b.is_ascii_whitespace()) => {}
                    None => return Err(syntax(position, "text outside the root element")),
                }
                Ok(None)
            }
            XmlEvent::CData(cdata) => {
                self.inner(position, "CDATA outside the root element")?
                    .push_text(cdata.into_inner());
                Ok(None)
            }
            XmlEvent::GeneralRef(reference) => {
                let resolved = resolve_reference(&reference).ok_or_else(|| DomError::Syntax {
                    position,
                    message: format!("unknown or invalid entity reference &{};", &*reference),
                })?;
                let mut buf = [0u8; 4];
                self.inner(position, "reference outside the root element")?
                    .push_text(Cow::Owned(resolved.encode_utf8(&mut buf).to_owned()));
                Ok(None)
            }
            XmlEvent::DocType(_) => Err(DomError::Dtd { position }),
            XmlEvent::Comment(_) | XmlEvent::Decl(_) | XmlEvent::PI(_) => Ok(None),
            XmlEvent::Eof => Err(match self.stack.last() {
                Some(frame) => DomError::Syntax {
                    position,
                    message: format!("unexpected end of document inside <{}>", frame.node.name),
                },
                None => DomError::NoRoot,
            }),
        }
    }

    /// A new element, within the depth and node limits.
    fn element(&mut self, start: &BytesStart<'a>, position: u64) -> Result<Node<'a>, DomError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(DomError::TooDeep);
        }
        element(start, &mut self.nodes, position)
    }

    /// Add a finished element to its parent; `Some` when it is the root.
    fn attach(&mut self, node: Node<'a>) -> Option<Node<'a>> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.node.children.push(node);
                None
            }
            None => Some(node),
        }
    }

    /// The innermost open element, for text; `outside` is the error when there is none.
    fn inner(&mut self, position: u64, outside: &str) -> Result<&mut Frame<'a>, DomError> {
        self.stack
            .last_mut()
            .ok_or_else(|| syntax(position, outside))
    }
}

fn syntax(position: u64, message: &str) -> DomError {
    DomError::Syntax {
        position,
        message: message.to_owned(),
    }
}

fn element<'a>(
    start: &BytesStart<'a>,
    nodes: &mut usize,
    position: u64,
) -> Result<Node<'a>, DomError> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(DomError::TooManyNodes);
    }
    let name = start.local_name().into_inner().to_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| DomError::Syntax {
            position,
            message: e.to_string(),
        })?;
        *nodes += 1;
        if *nodes > MAX_NODES {
            return Err(DomError::TooManyNodes);
        }
        let key = attr.key.local_name().into_inner().to_owned();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| DomError::Syntax {
                position,
                message: e.to_string(),
            })?;
        // `unescape_value` borrows from the attribute; detach into our lifetime.
        attrs.push((key, Cow::Owned(value.into_owned())));
    }
    Ok(Node {
        name,
        attrs,
        text: Cow::Borrowed(""),
        unscanned: false,
        clean: OnceCell::new(),
        children: Vec::new(),
    })
}

fn resolve_reference(reference: &str) -> Option<char> {
    match reference {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let num = reference.strip_prefix('#')?;
            let code = match num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse::<u32>().ok()?,
            };
            if code == 0 {
                return None;
            }
            char::from_u32(code)
        }
    }
}

impl<'a> Node<'a> {
    /// Local name of the element.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// ASCII case-insensitive name comparison (vendor spelling varies in case).
    pub(crate) fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// Child elements in document order.
    pub(crate) fn children(&self) -> &[Node<'a>] {
        &self.children
    }

    /// First child with the given (case-insensitive) name.
    pub(crate) fn child(&self, name: &str) -> Option<&Node<'a>> {
        self.children.iter().find(|c| c.is(name))
    }

    /// First child matching any of the names (in the order of `names`).
    pub(crate) fn child_any(&self, names: &[&str]) -> Option<&Node<'a>> {
        names.iter().find_map(|n| self.child(n))
    }

    /// All children with the given name.
    pub(crate) fn children_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Node<'a>> + 's {
        self.children.iter().filter(move |c| c.is(name))
    }

    /// `item` children (list entries).
    pub(crate) fn items<'s>(&'s self) -> impl Iterator<Item = &'s Node<'a>> + 's {
        self.children_named("item")
    }

    /// Follow a path of child names.
    pub(crate) fn path(&self, path: &[&str]) -> Option<&Node<'a>> {
        let mut node = self;
        for name in path {
            node = node.child(name)?;
        }
        Some(node)
    }

    /// Trimmed text directly inside this element ("" when empty), without control characters
    /// other than ASCII whitespace.
    pub(crate) fn text(&self) -> &str {
        let text = match self.unscanned {
            false => &self.text,
            true => self
                .clean
                .get_or_init(|| match strip_controls(Cow::Borrowed(&self.text)) {
                    Cow::Owned(clean) => Some(clean),
                    Cow::Borrowed(_) => None,
                })
                .as_deref()
                .unwrap_or(&self.text),
        };
        text.trim_matches(|c: char| c.is_ascii_whitespace())
    }

    /// [`Node::text`] as it is in the document: control characters in long text
    /// ([`SCAN_LATER`]) are not removed. Only for text whose reader refuses them itself
    /// (base64).
    pub(crate) fn raw_text(&self) -> &str {
        self.text.trim_matches(|c: char| c.is_ascii_whitespace())
    }

    /// Trimmed text, `None` when empty.
    pub(crate) fn text_opt(&self) -> Option<&str> {
        let t = self.text();
        (!t.is_empty()).then_some(t)
    }

    /// Trimmed non-empty text of a child.
    pub(crate) fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name)?.text_opt()
    }

    /// Trimmed non-empty text of the first present child among `names`.
    pub(crate) fn child_text_any(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.child_text(n))
    }

    /// Trimmed non-empty text at a path.
    pub(crate) fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.path(path)?.text_opt()
    }

    /// Child text as an owned string.
    pub(crate) fn child_string(&self, name: &str) -> Option<String> {
        self.child_text(name).map(str::to_owned)
    }

    /// Child text parsed as an unsigned integer.
    pub(crate) fn child_u64(&self, name: &str) -> Option<u64> {
        self.child_text(name)?.parse().ok()
    }

    /// Child text parsed as a signed integer.
    pub(crate) fn child_i64(&self, name: &str) -> Option<i64> {
        self.child_text(name)?.parse().ok()
    }

    /// Attribute value (local name, case-insensitive), trimmed, `None` when empty.
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_matches(|c: char| c.is_ascii_whitespace()))
            .filter(|v| !v.is_empty())
    }

    /// Visit every descendant (not `self`) depth-first, skipping subtrees for which
    /// `descend` returns false (the node itself is still visited).
    pub(crate) fn walk<'s>(
        &'s self,
        descend: &dyn Fn(&Node<'a>) -> bool,
        visit: &mut dyn FnMut(&'s Node<'a>),
    ) {
        for child in &self.children {
            visit(child);
            if descend(child) {
                child.walk(descend, visit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised pre-check never lets a control character through: every char that
    /// `strip_controls` removes makes `may_hold_controls` true, at every position of a chunk.
    #[test]
    fn the_fast_control_scan_never_misses_a_control() {
        let bad = |c: char| c.is_control() && !c.is_ascii_whitespace();
        let mut hits = 0;
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let one = c.encode_utf8(&mut buf);
            if bad(c) {
                hits += 1;
                for at in [0, 1, 63, 64, 100] {
                    let text = format!("{}{one}{}", "A".repeat(at), "B".repeat(70));
                    assert!(may_hold_controls(text.as_bytes()), "{c:?} at {at}");
                }
            } else if c.is_ascii() {
                assert!(!may_hold_controls(one.as_bytes()), "{c:?}");
            }
        }
        assert_eq!(hits, 65 - 4, "C0 + DEL + C1 controls, less TAB LF FF CR");
        let b64 = "/9j/4AAQSkZJRgABAQ+/=\r\n".repeat(1000);
        assert!(!may_hold_controls(b64.as_bytes()));
        assert_eq!(
            strip_controls(Cow::Borrowed("a\u{1b}[31mb\u{85}c\u{7f}")),
            "a[31mbc"
        );
    }

    #[test]
    fn local_names_attrs_text_cdata() {
        let doc = r#"<?xml version="1.0"?>
<ns:config xmlns:ns="http://www.ipc.com/ver10" version="1.7">
  <!-- comment -->
  <ns:deviceName type="string"><![CDATA[ Cam 1 ]]></ns:deviceName>
  <empty/><empty2 type="uint32"/><empty3></empty3><empty4><![CDATA[]]></empty4>
  <deviceNo.>7</deviceNo.>
  <a>x &amp; y&#65;<!-- c --></a>
</ns:config>"#;
        let root = parse(doc).expect("parses");
        assert_eq!(root.name(), "config");
        assert_eq!(root.attr("version"), Some("1.7"));
        assert_eq!(root.child_text("deviceName"), Some("Cam 1"));
        assert_eq!(
            root.child("deviceName").and_then(|n| n.attr("type")),
            Some("string")
        );
        for e in ["empty", "empty2", "empty3", "empty4"] {
            assert!(root.child(e).is_some(), "{e}");
            assert_eq!(root.child_text(e), None, "{e}");
        }
        assert_eq!(root.child_u64("deviceNo."), Some(7));
        assert_eq!(root.child_text("a"), Some("x & yA"));
    }

    /// Long text is taken past the reader ([`take_long_text`]); what follows it is read as
    /// before, and every way such text can end gives the tree the reader itself would give.
    #[test]
    fn long_text_taken_past_the_reader_ends_as_the_reader_would_end_it() {
        let long = "QUJD".repeat(SCAN_LATER / 4 + 1);
        let at =
            |doc: &str| parse(doc).map(|root| root.child("d").map(|d| d.raw_text().to_owned()));
        // Followed by the end tag, a child, CDATA, a comment, a reference.
        assert_eq!(at(&format!("<a><d>{long}</d></a>")), Ok(Some(long.clone())));
        let doc = format!("<a><d>{long}<e>1</e>{long}</d></a>");
        let root = parse(&doc).unwrap();
        let d = root.child("d").unwrap();
        assert_eq!(
            d.raw_text(),
            format!("{long}{long}"),
            "text on both sides of a child"
        );
        assert_eq!(d.child_text("e"), Some("1"));
        assert_eq!(
            at(&format!("<a><d>{long}<![CDATA[<x>]]></d></a>")),
            Ok(Some(format!("{long}<x>")))
        );
        assert_eq!(
            at(&format!("<a><d>{long}<!-- c --></d></a>")),
            Ok(Some(long.clone()))
        );
        assert_eq!(
            at(&format!("<a><d>{long}&amp;{long}</d></a>")),
            Ok(Some(format!("{long}&{long}")))
        );
        // Multi-byte characters and control characters in it.
        let mixed = format!("{long}é\u{1b}ü");
        let doc = format!("<a><d>{mixed}</d></a>");
        let root = parse(&doc).unwrap();
        assert_eq!(root.child("d").unwrap().raw_text(), mixed);
        assert_eq!(root.child("d").unwrap().text(), format!("{long}éü"));
        // Errors after it: the end tag's name is still checked, positions are still right.
        let doc = format!("<a><d>{long}</x></a>");
        match parse(&doc) {
            Err(DomError::Syntax { position, message }) => {
                assert_eq!(position as usize, doc.find("</x>").unwrap(), "{message}");
                assert!(message.contains("x"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&format!("<a><d>{long}")),
            Err(DomError::Syntax { .. })
        ));
        assert!(matches!(
            parse(&format!("<a><d>{long}</d>")),
            Err(DomError::Syntax { .. })
        ));
        assert!(matches!(
            parse(&format!("<a><d>{long}&bad;</d></a>")),
            Err(DomError::Syntax { .. })
        ));
        // One byte under the limit: read by the reader, the same tree.
        let short = "Q".repeat(SCAN_LATER - 1);
        assert_eq!(at(&format!("<a><d>{short}</d></a>")), Ok(Some(short)));
    }

    /// A long CDATA section at the start of an element (an IPC post's image) is taken past the
    /// reader too, and gives the tree the reader would give: markup characters, `]]` and line
    /// breaks inside it, whitespace around it, text, a child or more CDATA after it.
    #[test]
    fn long_cdata_taken_past_the_reader_ends_as_the_reader_would_end_it() {
        let long = "QUJD".repeat(SCAN_LATER / 4);
        let at =
            |doc: &str| parse(doc).map(|root| root.child("d").map(|d| d.raw_text().to_owned()));
        for body in [
            format!("<![CDATA[{long}]]>"),
            format!("\n    <![CDATA[{long}]]>\n  "),
            format!("\t\r\n<![CDATA[{long}]]><!-- c -->"),
        ] {
            assert_eq!(
                at(&format!("<a><d>{body}</d></a>")),
                Ok(Some(long.clone())),
                "{body:?}"
            );
        }
        let odd = format!("{long}<e>&amp;]]\r\n]>x");
        assert_eq!(
            at(&format!("<a><d><![CDATA[{odd}]]></d></a>")),
            Ok(Some(odd.clone()))
        );
        // The reader keeps such content as it is too (no line-break normalisation).
        assert_eq!(
            at("<a><d><![CDATA[<e>&amp;]]\r\n]>x]]></d></a>"),
            Ok(Some("<e>&amp;]]\r\n]>x".to_owned()))
        );
        assert_eq!(
            at(&format!(
                "<a><d><![CDATA[{long}]]>tail<![CDATA[!]]></d></a>"
            )),
            Ok(Some(format!("{long}tail!")))
        );
        let doc = format!("<a><d><![CDATA[{long}]]><e>1</e></d></a>");
        let root = parse(&doc).unwrap();
        assert_eq!(root.child("d").unwrap().raw_text(), long);
        assert_eq!(root.child("d").unwrap().child_text("e"), Some("1"));
        // Errors: an unterminated section, a wrong end tag after it (at its offset).
        assert!(matches!(
            parse(&format!("<a><d><![CDATA[{long}</d></a>")),
            Err(DomError::Syntax { .. })
        ));
        let doc = format!("<a><d><![CDATA[{long}]]></x></a>");
        match parse(&doc) {
            Err(DomError::Syntax { position, message }) => {
                assert_eq!(position as usize, doc.find("</x>").unwrap(), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // One byte under the limit: read by the reader, the same tree.
        let short = &long[1..];
        assert_eq!(
            at(&format!("<a><d> <![CDATA[{short}]]></d></a>")),
            Ok(Some(short.to_owned()))
        );
    }

    #[test]
    fn long_text_is_taken_only_when_long_and_plain() {
        let long = "QUJD".repeat(SCAN_LATER / 4);
        let take = |doc: &str| {
            let mut reader = Reader::from_str(doc);
            assert!(matches!(reader.read_event(), Ok(XmlEvent::Start(_))));
            let before = reader.buffer_position();
            let taken = take_long_text(&mut reader, doc).map(str::len);
            let moved = reader.buffer_position() - before;
            (
                taken,
                moved,
                reader
                    .read_event()
                    .is_ok_and(|e| matches!(e, XmlEvent::End(_))),
            )
        };
        let n = long.len();
        assert_eq!(take(&format!("<d>{long}</d>")), (Some(n), n as u64, true));
        assert_eq!(
            take(&format!("<d>{}</d>", &long[1..])),
            (None, 0, false),
            "too short"
        );
        assert_eq!(
            take(&format!("<d>{long}&amp;</d>")),
            (None, 0, false),
            "a reference"
        );
        assert_eq!(take(&format!("<d>{long}")).0, None, "no markup after it");
        // CDATA: the whole section is consumed, with the whitespace before it.
        assert_eq!(
            take(&format!("<d><![CDATA[{long}]]></d>")),
            (Some(n), n as u64 + 12, true)
        );
        assert_eq!(
            take(&format!("<d>\n <![CDATA[{long}]]></d>")),
            (Some(n), n as u64 + 14, true)
        );
        assert_eq!(
            take(&format!("<d><![CDATA[{}]]></d>", &long[1..])),
            (None, 0, false),
            "too short"
        );
        assert_eq!(
            take(&format!("<d><![CDATA[{long}</d>")),
            (None, 0, false),
            "no end of the section"
        );
    }

    #[test]
    fn big_text_is_borrowed() {
        let payload = "A".repeat(100_000);
        let doc = format!("<config><data>\n{payload}\n</data></config>");
        let root = parse(&doc).unwrap();
        let data = root.child("data").unwrap();
        assert!(matches!(data.text, Cow::Borrowed(_)));
        assert_eq!(data.text().len(), 100_000);
    }

    #[test]
    fn control_characters_in_long_text_are_removed_when_the_text_is_read() {
        let long = format!("{}\u{1b}[31m{}\u{0}", "A".repeat(3000), "B".repeat(3000));
        let doc = format!("<config><data>{long}</data><short>x\u{1b}y</short></config>");
        let root = parse(&doc).unwrap();
        let data = root.child("data").unwrap();
        assert_eq!(data.raw_text(), long, "as in the document");
        let clean = format!("{}[31m{}", "A".repeat(3000), "B".repeat(3000));
        assert_eq!(data.text(), clean);
        assert_eq!(data.text(), clean, "the second read gives the same");
        assert_eq!(root.child_text("short"), Some("xy"));
        assert_eq!(
            root.child("short").unwrap().raw_text(),
            "xy",
            "short text: at once"
        );
    }

    #[test]
    fn doctype_is_refused() {
        let doc =
            r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><config>&lol;</config>"#;
        assert!(matches!(parse(doc), Err(DomError::Dtd { .. })));
    }

    #[test]
    fn unknown_entity_is_a_syntax_error() {
        assert!(matches!(
            parse("<config>&lol;</config>"),
            Err(DomError::Syntax { .. })
        ));
    }

    #[test]
    fn depth_and_size_limits() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep).unwrap_err(), DomError::TooDeep);
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_NODES + 1));
        assert_eq!(parse(&wide).unwrap_err(), DomError::TooManyNodes);
    }

    #[test]
    fn malformed_documents() {
        assert!(matches!(parse("<config>"), Err(DomError::Syntax { .. })));
        assert!(matches!(
            parse("<config></other>"),
            Err(DomError::Syntax { .. })
        ));
        assert!(matches!(
            parse("<?xml version=\"1.0\"?><broken"),
            Err(DomError::Syntax { .. })
        ));
        assert_eq!(
            parse("<!-- only a comment -->").unwrap_err(),
            DomError::NoRoot
        );
        assert!(matches!(
            parse("<a x='1' x='2'/>"),
            Err(DomError::Syntax { .. })
        ));
    }

    #[test]
    fn trailing_content_after_root_is_ignored() {
        let root = parse("<config><a>1</a></config>\n<!-- <config/> -->\0garbage").unwrap();
        assert_eq!(root.child_text("a"), Some("1"));
    }

    #[test]
    fn text_pieces_are_joined() {
        let root = parse("<a>foo <![CDATA[bar]]> baz\n</a>").unwrap();
        assert_eq!(root.text(), "foo bar baz");
        let root = parse("<a><![CDATA[x]]> <![CDATA[y]]></a>").unwrap();
        assert_eq!(root.text(), "x y");
    }
}
