//! One DNS request in, one response out: cluster names from the zone,
//! everything else from the upstream resolvers.

use std::iter;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::forward::Forwarder;
use super::records::ClusterZone;

/// How many CNAMEs a chain may have before we stop following it (loops).
const MAX_CNAME_HOPS: usize = 8;

/// The largest UDP response we offer to EDNS clients.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Serves the cluster zone and forwards the rest.
pub struct ClusterDnsHandler {
    zone: ClusterZone,
    forwarder: Forwarder,
}

/// A response's code and sections, whoever produced it.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl ClusterDnsHandler {
    /// Answers `zone` itself and sends other names to `forwarder`.
    pub fn new(zone: ClusterZone, forwarder: Forwarder) -> ClusterDnsHandler {
        ClusterDnsHandler { zone, forwarder }
    }

    /// The answer to `name`/`query_type`, with the chain of an in-zone CNAME
    /// (an ExternalName service) followed: pods' stub resolvers expect the
    /// server to resolve it, as CoreDNS does.
    async fn reply(&self, name: Name, query_type: RecordType) -> Reply {
        let mut reply = self.reply_once(&name, query_type).await;
        let mut hops = 0;
        while let Some(target) = cname_to_follow(&reply.answers, query_type) {
            hops += 1;
            if hops > MAX_CNAME_HOPS {
                break;
            }
            let next = self.reply_once(&target, query_type).await;
            reply.code = next.code;
            reply.answers.extend(next.answers);
            reply.authorities = next.authorities;
        }
        reply
    }

    async fn reply_once(&self, name: &Name, query_type: RecordType) -> Reply {
        if self.zone.contains(name) {
            let answer = self.zone.answer(name, query_type);
            return Reply {
                code: answer.code,
                authoritative: true,
                answers: answer.answers,
                authorities: answer.authorities,
                additionals: answer.additionals,
            };
        }
        let forwarded = self.forwarder.resolve(name, query_type).await;
        Reply {
            code: forwarded.code,
            authoritative: false,
            answers: forwarded.answers,
            authorities: forwarded.authorities,
            additionals: Vec::new(),
        }
    }
}

/// The target of a CNAME ending `answers` that nothing in them resolves yet.
fn cname_to_follow(answers: &[Record], query_type: RecordType) -> Option<Name> {
    if matches!(query_type, RecordType::CNAME | RecordType::ANY) {
        return None;
    }
    let RData::CNAME(CNAME(target)) = &answers.last()?.data else {
        return None;
    };
    Some(target.clone())
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let reply = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            error_reply(ResponseCode::NotImp)
        } else {
            match request.request_info() {
                Ok(info) => {
                    let name = Name::from(info.query.name().clone());
                    self.reply(name, info.query.query_type()).await
                }
                Err(_) => error_reply(ResponseCode::FormErr),
            }
        };
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(err) => {
                tracing::debug!(error = %err, client = %request.src(), "sending a DNS response failed");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

fn error_reply(code: ResponseCode) -> Reply {
    Reply {
        code,
        authoritative: false,
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
    }
}

/// EDNS in the response when the client used it (lets UDP answers exceed 512 bytes).
fn response_edns(request: &Request) -> Option<Edns> {
    let requested = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_version(0);
    edns.set_max_payload(requested.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    Some(edns)
}
