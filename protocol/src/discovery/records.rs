//! The DNS side of discovery: the names a node advertises, the TXT layout of
//! its metadata, and turning packets into [`Message`]s and back. The DNS
//! wire format itself is `simple-dns`'s; what goes in the packets is ours
//! (docs/PROTOCOL.md §9).

use std::net::IpAddr;

use simple_dns::rdata::{A, AAAA, PTR, RData, SRV, TXT};
use simple_dns::{
    CLASS, CharacterString, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, ResourceRecord, TYPE,
};

use crate::RemoteIdentity;
use crate::metadata::Metadata;

/// The largest mDNS packet handled or sent (RFC 6762 §17).
pub const MAX_PACKET_LEN: usize = 9000;
/// The most TXT bytes (RDATA) a node advertises; metadata beyond it is
/// truncated (RFC 6763 §6.2 advises against more).
pub const MAX_TXT_LEN: usize = 1300;
/// The bare TXT string that marks advertised metadata as truncated.
pub const TRUNCATED_MARKER: &str = "truncated";
/// The DNS-SD service enumeration name (RFC 6763 §9).
pub(crate) const SERVICES_NAME: &str = "_services._dns-sd._udp.local";
/// The longest service name RFC 6335 allows, without the underscore.
const MAX_SERVICE_LEN: usize = 15;

/// The DNS names of one node's service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// `_<app>._udp.local`
    pub(crate) service: String,
    /// `<identity>._<app>._udp.local`
    pub(crate) instance: String,
    /// `<identity>.local`
    pub(crate) host: String,
}

impl Names {
    pub(crate) fn new(service: &str, identity: &RemoteIdentity) -> Self {
        Self {
            service: service.to_owned(),
            instance: format!("{identity}.{service}"),
            host: format!("{identity}.local"),
        }
    }
}

/// The DNS-SD service type of an application, without the trailing dot:
/// `_` + the app name lowercased, every run of characters other than
/// `a-z0-9` turned into one `-`, prefixed with `app-` if it has no letter,
/// cut to 15 characters and trimmed of `-` (RFC 6335); `pos-p2p` if nothing
/// is left.
///
/// ```
/// use pos_p2p_protocol::discovery::service_type;
///
/// assert_eq!(service_type("Notes"), "_notes._udp.local");
/// assert_eq!(service_type("My Photo Sync!"), "_my-photo-sync._udp.local");
/// assert_eq!(service_type("a-very-long-application-name"), "_a-very-long-app._udp.local");
/// assert_eq!(service_type("🙂"), "_pos-p2p._udp.local");
/// assert_eq!(service_type("2048"), "_app-2048._udp.local");
/// ```
pub fn service_type(app_name: &str) -> String {
    let mut label = String::new();
    for c in app_name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label.push(c);
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    if !label.is_empty() && !label.chars().any(|c| c.is_ascii_lowercase()) {
        // RFC 6335: a service name has at least one letter.
        label.insert_str(0, "app-");
    }
    label.truncate(MAX_SERVICE_LEN);
    let label = label.trim_matches('-');
    let label = if label.is_empty() { "pos-p2p" } else { label };
    format!("_{label}._udp.local")
}

/// Metadata as TXT strings: one `key=value` string per entry, in key order,
/// while the strings fit in [`MAX_TXT_LEN`] bytes. An entry longer than a
/// DNS string (255 bytes) and every entry after the first that does not fit
/// are left out, and the bare string [`TRUNCATED_MARKER`] is added. No
/// metadata is one empty string (RFC 6763 §6.1).
pub(crate) fn txt_strings(metadata: &Metadata) -> Vec<Vec<u8>> {
    let marker_cost = 1 + TRUNCATED_MARKER.len();
    let mut strings = Vec::new();
    let mut used = 0;
    let mut truncated = false;
    for (key, value) in metadata.iter() {
        let string = format!("{key}={value}").into_bytes();
        if string.len() > 255 {
            truncated = true;
            continue;
        }
        if used + 1 + string.len() + marker_cost > MAX_TXT_LEN {
            truncated = true;
            break;
        }
        used += 1 + string.len();
        strings.push(string);
    }
    if truncated {
        strings.push(TRUNCATED_MARKER.as_bytes().to_vec());
    }
    if strings.is_empty() {
        strings.push(Vec::new());
    }
    strings
}

/// Metadata from TXT strings, as [`txt_strings`] lays them out; anything
/// else is tolerated: the first of duplicate keys wins, entries that are not
/// valid metadata are skipped (and mark the result truncated).
pub(crate) fn metadata_from_txt(strings: &[&[u8]]) -> (Metadata, bool) {
    let mut metadata = Metadata::new();
    let mut truncated = false;
    for string in strings {
        if string.is_empty() {
            continue;
        }
        let Some(eq) = string.iter().position(|b| *b == b'=') else {
            truncated |= *string == TRUNCATED_MARKER.as_bytes();
            continue;
        };
        let (Ok(key), Ok(value)) = (
            std::str::from_utf8(&string[..eq]),
            std::str::from_utf8(&string[eq + 1..]),
        ) else {
            truncated = true;
            continue;
        };
        if metadata.get(key).is_some() {
            continue;
        }
        if metadata.insert(key, value).is_err() {
            truncated = true;
        }
    }
    (metadata, truncated)
}

/// A service instance record set, as one packet carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct InstanceRecords {
    /// A PTR from the service to the instance, with its TTL.
    pub(crate) ptr_ttl: Option<u32>,
    /// SRV: TTL, port, target host (lowercase).
    pub(crate) srv: Option<(u32, u16, String)>,
    /// TXT: TTL and the strings.
    pub(crate) txt: Option<(u32, Vec<Vec<u8>>)>,
}

/// What a packet says, in the terms discovery cares about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Message {
    pub(crate) id: u16,
    pub(crate) is_response: bool,
    /// Questions: lowercase name and type.
    pub(crate) questions: Vec<(String, QueryType)>,
    /// Records of our service's instances, by identity.
    pub(crate) instances: Vec<(RemoteIdentity, InstanceRecords)>,
    /// Host address records: lowercase host name, address, TTL.
    pub(crate) addrs: Vec<(String, IpAddr, u32)>,
    /// PTR records for our service in a query's known-answer section:
    /// instance identity and TTL.
    pub(crate) known_answers: Vec<(RemoteIdentity, u32)>,
    /// Records of other names and types, not ours to look at.
    pub(crate) ignored_records: usize,
}

/// The question types discovery answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryType {
    Ptr,
    Srv,
    Txt,
    A,
    Aaaa,
    Any,
    Other,
}

impl QueryType {
    fn from_qtype(qtype: QTYPE) -> Self {
        match qtype {
            QTYPE::TYPE(TYPE::PTR) => Self::Ptr,
            QTYPE::TYPE(TYPE::SRV) => Self::Srv,
            QTYPE::TYPE(TYPE::TXT) => Self::Txt,
            QTYPE::TYPE(TYPE::A) => Self::A,
            QTYPE::TYPE(TYPE::AAAA) => Self::Aaaa,
            QTYPE::ANY => Self::Any,
            _ => Self::Other,
        }
    }

    /// A multicast (QM) question of this type.
    fn question(self, name: Name<'_>) -> Question<'_> {
        let qtype = match self {
            Self::Ptr => QTYPE::TYPE(TYPE::PTR),
            Self::Srv => QTYPE::TYPE(TYPE::SRV),
            Self::Txt => QTYPE::TYPE(TYPE::TXT),
            Self::A => QTYPE::TYPE(TYPE::A),
            Self::Aaaa => QTYPE::TYPE(TYPE::AAAA),
            Self::Any | Self::Other => QTYPE::ANY,
        };
        Question::new(name, qtype, QCLASS::CLASS(CLASS::IN), false)
    }

    /// Whether a question of this type asks for records of `want`.
    pub(crate) fn asks_for(self, want: QueryType) -> bool {
        self == want || self == Self::Any
    }
}

/// Why a packet was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Larger than [`MAX_PACKET_LEN`].
    #[error("mDNS packet of {len} bytes is larger than {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header claims more entries than the packet could hold.
    #[error("mDNS header claims more records than {len} bytes can hold")]
    CountsTooLarge {
        /// The packet's length.
        len: usize,
    },
    /// Not a valid DNS message.
    #[error("malformed DNS message: {0}")]
    Malformed(String),
}

/// Parse a packet, keeping what concerns `service` (lowercase, no trailing
/// dot). Allocation is bounded by the packet's length: the header's counts
/// are checked against it before the DNS parser reserves room for them.
pub(crate) fn parse(data: &[u8], service: &str) -> Result<Message, PacketError> {
    if data.len() > MAX_PACKET_LEN {
        return Err(PacketError::TooLarge {
            len: data.len(),
            max: MAX_PACKET_LEN,
        });
    }
    if data.len() < 12 {
        return Err(PacketError::Malformed("shorter than a DNS header".into()));
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([data[i], data[i + 1]]));
    // The smallest question is 5 bytes (root name, type, class), the
    // smallest record 11.
    let least = count(4) * 5 + (count(6) + count(8) + count(10)) * 11;
    if least > data.len() - 12 {
        return Err(PacketError::CountsTooLarge { len: data.len() });
    }
    let packet = Packet::parse(data).map_err(|e| PacketError::Malformed(e.to_string()))?;
    // RFC 6762 §18.3, §18.11: other opcodes and response codes are ignored.
    if packet.opcode() != simple_dns::OPCODE::StandardQuery
        || packet.rcode() != simple_dns::RCODE::NoError
    {
        return Err(PacketError::Malformed(
            "not a standard query or response".into(),
        ));
    }
    let mut message = Message {
        id: packet.id(),
        is_response: packet.has_flags(PacketFlag::RESPONSE),
        ..Message::default()
    };
    for question in &packet.questions {
        message.questions.push((
            lowercase_name(&question.qname),
            QueryType::from_qtype(question.qtype),
        ));
    }
    let suffix = format!(".{service}");
    let records = packet
        .answers
        .iter()
        .chain(&packet.name_servers)
        .chain(&packet.additional_records);
    for record in records {
        if record.class != CLASS::IN {
            message.ignored_records += 1;
            continue;
        }
        let name = lowercase_name(&record.name);
        match &record.rdata {
            RData::PTR(PTR(target)) if name == service => {
                let target = lowercase_name(target);
                match instance_identity(&target, &suffix) {
                    Some(identity) if message.is_response => {
                        instance_entry(&mut message.instances, identity).ptr_ttl = Some(record.ttl);
                    }
                    Some(identity) => message.known_answers.push((identity, record.ttl)),
                    None => message.ignored_records += 1,
                }
            }
            RData::SRV(srv) if message.is_response => match instance_identity(&name, &suffix) {
                Some(identity) => {
                    instance_entry(&mut message.instances, identity).srv =
                        Some((record.ttl, srv.port, lowercase_name(&srv.target)));
                }
                None => message.ignored_records += 1,
            },
            RData::TXT(txt) if message.is_response => match instance_identity(&name, &suffix) {
                Some(identity) => {
                    instance_entry(&mut message.instances, identity).txt =
                        Some((record.ttl, txt_strings_of(txt)?));
                }
                None => message.ignored_records += 1,
            },
            RData::A(a) if message.is_response => {
                message.addrs.push((
                    name,
                    IpAddr::from(std::net::Ipv4Addr::from(a.address)),
                    record.ttl,
                ));
            }
            RData::AAAA(aaaa) if message.is_response => {
                message.addrs.push((
                    name,
                    IpAddr::from(std::net::Ipv6Addr::from(aaaa.address)),
                    record.ttl,
                ));
            }
            _ => message.ignored_records += 1,
        }
    }
    Ok(message)
}

fn instance_entry(
    instances: &mut Vec<(RemoteIdentity, InstanceRecords)>,
    identity: RemoteIdentity,
) -> &mut InstanceRecords {
    let index = match instances.iter().position(|(id, _)| *id == identity) {
        Some(index) => index,
        None => {
            instances.push((identity, InstanceRecords::default()));
            instances.len() - 1
        }
    };
    &mut instances[index].1
}

/// The identity of an instance name `<identity><suffix>`.
fn instance_identity(name: &str, suffix: &str) -> Option<RemoteIdentity> {
    name.strip_suffix(suffix)?.parse().ok()
}

fn lowercase_name(name: &Name<'_>) -> String {
    name.to_string().to_ascii_lowercase()
}

/// A TXT record's strings in order. `simple-dns` keeps them private, so
/// the record is written back out and its strings read off the wire form.
fn txt_strings_of(txt: &TXT<'_>) -> Result<Vec<Vec<u8>>, PacketError> {
    let mut packet = Packet::new_reply(0);
    packet.answers.push(ResourceRecord::new(
        Name::new_unchecked("t"),
        CLASS::IN,
        0,
        RData::TXT(txt.clone()),
    ));
    let bytes = packet
        .build_bytes_vec()
        .map_err(|e| PacketError::Malformed(e.to_string()))?;
    // Header (12) + name "t" (3) + type, class, TTL, RDLENGTH (10).
    let mut rdata = bytes.get(25..).unwrap_or_default();
    let mut strings = Vec::new();
    while let Some((&len, rest)) = rdata.split_first() {
        let len = usize::from(len);
        let string = rest
            .get(..len)
            .ok_or_else(|| PacketError::Malformed("TXT string overruns its record".into()))?;
        strings.push(string.to_vec());
        rdata = &rest[len..];
    }
    Ok(strings)
}

/// What one node advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advert {
    pub(crate) names: Names,
    pub(crate) port: u16,
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) txt: Vec<Vec<u8>>,
}

/// Which records a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Answer {
    /// The PTR from the service to our instance.
    pub(crate) ptr: bool,
    /// SRV and TXT of our instance.
    pub(crate) instance: bool,
    /// Our host's addresses.
    pub(crate) addrs: bool,
    /// The PTR from the DNS-SD enumeration name to our service.
    pub(crate) enumeration: bool,
}

impl Answer {
    /// Everything: an announcement or a goodbye.
    pub(crate) const ALL: Self = Self {
        ptr: true,
        instance: true,
        addrs: true,
        enumeration: false,
    };

    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn union(self, other: Self) -> Self {
        Self {
            ptr: self.ptr || other.ptr,
            instance: self.instance || other.instance,
            addrs: self.addrs || other.addrs,
            enumeration: self.enumeration || other.enumeration,
        }
    }
}

/// A response packet: `answer`'s records in the answer section; with a PTR
/// or SRV, the records they point at in the additional section. `legacy` is
/// a legacy unicast query's id and questions (RFC 6762 §6.7): they are
/// echoed, TTLs are capped at 10 s and no cache-flush bit is set.
pub(crate) fn response(
    advert: &Advert,
    answer: Answer,
    ttl: u32,
    legacy: Option<(u16, &[(String, QueryType)])>,
) -> Result<Vec<u8>, PacketError> {
    let mut packet = Packet::new_reply(legacy.map_or(0, |(id, _)| id));
    packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    let (ttl, flush) = match legacy {
        Some(_) => (ttl.min(10), false),
        None => (ttl, true),
    };
    let names = &advert.names;
    let service = Name::new(&names.service).map_err(bad_name)?;
    let instance = Name::new(&names.instance).map_err(bad_name)?;
    let host = Name::new(&names.host).map_err(bad_name)?;
    let enumeration = Name::new_unchecked(SERVICES_NAME);
    let mut txt = TXT::new();
    for string in &advert.txt {
        txt.add_char_string(CharacterString::new(string).map_err(bad_name)?);
    }
    if let Some((_, questions)) = legacy {
        for (qname, qtype) in questions {
            let qname = Name::new(qname).map_err(bad_name)?;
            packet.questions.push(qtype.question(qname));
        }
    }
    let ptr = ResourceRecord::new(
        service.clone(),
        CLASS::IN,
        ttl,
        RData::PTR(PTR(instance.clone())),
    );
    let srv = ResourceRecord::new(
        instance.clone(),
        CLASS::IN,
        ttl,
        RData::SRV(SRV {
            priority: 0,
            weight: 0,
            port: advert.port,
            target: host.clone(),
        }),
    )
    .with_cache_flush(flush);
    let txt =
        ResourceRecord::new(instance, CLASS::IN, ttl, RData::TXT(txt)).with_cache_flush(flush);
    let addrs: Vec<ResourceRecord<'_>> = advert
        .ips
        .iter()
        .map(|ip| {
            let rdata = match ip {
                IpAddr::V4(v4) => RData::A(A::from(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA::from(*v6)),
            };
            ResourceRecord::new(host.clone(), CLASS::IN, ttl, rdata).with_cache_flush(flush)
        })
        .collect();

    if answer.enumeration {
        packet.answers.push(ResourceRecord::new(
            enumeration,
            CLASS::IN,
            ttl,
            RData::PTR(PTR(service)),
        ));
    }
    let (mut main, mut extra) = (Vec::new(), Vec::new());
    if answer.ptr {
        main.push(ptr);
    }
    let instance_to = if answer.instance {
        &mut main
    } else {
        &mut extra
    };
    if answer.instance || answer.ptr {
        instance_to.push(srv);
        instance_to.push(txt);
    }
    let addrs_to = if answer.addrs { &mut main } else { &mut extra };
    if answer.addrs || answer.instance || answer.ptr {
        addrs_to.extend(addrs);
    }
    packet.answers.extend(main);
    packet.additional_records.extend(extra);
    build(&packet)
}

/// A query: the questions, and known answers (PTRs to these instances with
/// their remaining TTLs) so their responders can stay quiet.
pub(crate) fn query(
    id: u16,
    questions: &[(&str, QueryType)],
    service: &str,
    known: &[(RemoteIdentity, u32)],
) -> Result<Vec<u8>, PacketError> {
    let mut packet = Packet::new_query(id);
    for (name, qtype) in questions {
        packet
            .questions
            .push(qtype.question(Name::new(name).map_err(bad_name)?));
    }
    let service_name = Name::new(service).map_err(bad_name)?;
    let instances: Vec<String> = known
        .iter()
        .map(|(id, _)| format!("{id}.{service}"))
        .collect();
    for ((_, ttl), instance) in known.iter().zip(&instances) {
        packet.answers.push(ResourceRecord::new(
            service_name.clone(),
            CLASS::IN,
            *ttl,
            RData::PTR(PTR(Name::new(instance).map_err(bad_name)?)),
        ));
    }
    build(&packet)
}

fn build(packet: &Packet<'_>) -> Result<Vec<u8>, PacketError> {
    let bytes = packet
        .build_bytes_vec_compressed()
        .map_err(|e| PacketError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_PACKET_LEN {
        return Err(PacketError::TooLarge {
            len: bytes.len(),
            max: MAX_PACKET_LEN,
        });
    }
    Ok(bytes)
}

fn bad_name(e: simple_dns::SimpleDnsError) -> PacketError {
    PacketError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(n: u8) -> RemoteIdentity {
        crate::Identity::from_bytes(&[n; 32]).to_remote_identity()
    }

    fn advert(metadata: &Metadata) -> Advert {
        Advert {
            names: Names::new("_notes._udp.local", &identity(1)),
            port: 4433,
            ips: vec!["192.0.2.7".parse().unwrap(), "fd00::7".parse().unwrap()],
            txt: txt_strings(metadata),
        }
    }

    #[test]
    fn a_response_parses_back_to_what_was_advertised() {
        let mut metadata = Metadata::new();
        metadata.insert("name", "Laptop").unwrap();
        metadata.insert("os", "linux").unwrap();
        let packet = response(&advert(&metadata), Answer::ALL, 120, None).unwrap();
        let message = parse(&packet, "_notes._udp.local").unwrap();
        assert!(message.is_response);
        assert_eq!(message.instances.len(), 1);
        let (id, records) = &message.instances[0];
        assert_eq!(*id, identity(1));
        assert_eq!(records.ptr_ttl, Some(120));
        let host = format!("{}.local", identity(1));
        assert_eq!(records.srv, Some((120, 4433, host.clone())));
        let (ttl, strings) = records.txt.clone().unwrap();
        assert_eq!(ttl, 120);
        let strings: Vec<&[u8]> = strings.iter().map(Vec::as_slice).collect();
        assert_eq!(metadata_from_txt(&strings), (metadata, false));
        assert_eq!(
            message.addrs,
            vec![
                (host.clone(), "192.0.2.7".parse().unwrap(), 120),
                (host, "fd00::7".parse().unwrap(), 120)
            ]
        );
        // Another app's browser sees none of it.
        let other = parse(&packet, "_photos._udp.local").unwrap();
        assert!(other.instances.is_empty());
    }

    #[test]
    fn metadata_too_large_for_a_txt_record_is_cut_by_the_rules() {
        let mut metadata = Metadata::new();
        // Too long for one DNS string: left out, later entries still go.
        metadata.insert("a-long", "x".repeat(300)).unwrap();
        for i in 0..20 {
            metadata
                .insert(format!("k{i:02}"), "v".repeat(100))
                .unwrap();
        }
        let strings = txt_strings(&metadata);
        let total: usize = strings.iter().map(|s| 1 + s.len()).sum();
        assert!(total <= MAX_TXT_LEN, "{total}");
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.last().unwrap(), TRUNCATED_MARKER.as_bytes());
        let refs: Vec<&[u8]> = strings.iter().map(Vec::as_slice).collect();
        let (decoded, truncated) = metadata_from_txt(&refs);
        assert!(truncated);
        assert_eq!(decoded.get("a-long"), None);
        // A prefix of the remaining entries, in key order.
        let kept: Vec<&str> = decoded.iter().map(|(k, _)| k).collect();
        let expected: Vec<String> = (0..kept.len()).map(|i| format!("k{i:02}")).collect();
        assert_eq!(kept, expected);
        assert!(kept.len() >= 10 && kept.len() < 20);
    }

    #[test]
    fn empty_metadata_is_one_empty_string() {
        assert_eq!(txt_strings(&Metadata::new()), vec![Vec::<u8>::new()]);
        assert_eq!(metadata_from_txt(&[b""]), (Metadata::new(), false));
    }

    #[test]
    fn foreign_txt_strings_are_tolerated() {
        let (metadata, truncated) =
            metadata_from_txt(&[b"flag", b"a=1", b"a=2", b"=orphan", b"\xff=x", b"b="]);
        assert!(
            truncated,
            "invalid UTF-8 and an empty key mark the metadata truncated"
        );
        assert_eq!(metadata.get("a"), Some("1"));
        assert_eq!(metadata.get("b"), Some(""));
        assert_eq!(metadata.len(), 2);
    }

    #[test]
    fn inflated_header_counts_are_refused_before_parsing() {
        let mut packet = vec![0u8; 12];
        packet[6] = 0xff; // 65,280 answers in 12 bytes
        assert_eq!(
            parse(&packet, "_notes._udp.local"),
            Err(PacketError::CountsTooLarge { len: 12 })
        );
        assert!(matches!(
            parse(&vec![0; MAX_PACKET_LEN + 1], "_x._udp.local"),
            Err(PacketError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(&[0; 5], "_x._udp.local"),
            Err(PacketError::Malformed(_))
        ));
    }

    #[test]
    fn queries_carry_known_answers() {
        let packet = query(
            0,
            &[("_notes._udp.local", QueryType::Ptr)],
            "_notes._udp.local",
            &[(identity(2), 100)],
        )
        .unwrap();
        let message = parse(&packet, "_notes._udp.local").unwrap();
        assert!(!message.is_response);
        assert_eq!(
            message.questions,
            vec![("_notes._udp.local".into(), QueryType::Ptr)]
        );
        assert_eq!(message.known_answers, vec![(identity(2), 100)]);
    }

    #[test]
    fn legacy_responses_echo_the_question_and_cap_the_ttl() {
        let questions = vec![("_notes._udp.local".to_owned(), QueryType::Ptr)];
        let packet = response(
            &advert(&Metadata::new()),
            Answer::ALL,
            120,
            Some((77, &questions)),
        )
        .unwrap();
        let parsed = Packet::parse(&packet).unwrap();
        assert_eq!(parsed.id(), 77);
        assert_eq!(parsed.questions.len(), 1);
        assert!(parsed.answers.iter().all(|r| r.ttl == 10 && !r.cache_flush));
    }
}
