//! The node-local address of the cluster DNS: a dummy interface holding the
//! DNS Service's ClusterIP, so pods (routed through the bridge) and the host
//! reach this node's server without any NAT rule.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::{LinkDummy, LinkUnspec};

use super::DnsError;

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EOPNOTSUPP: i32 = 95;

/// Where the address goes when the kernel has no dummy links: any local
/// address is delivered locally, whichever link holds it.
const LOOPBACK: &str = "lo";

/// Puts `address/32` on dummy link `name` (created unless it exists, and
/// brought up), or on the loopback link where the kernel has no dummy links;
/// idempotent, so a restarted agent just re-runs it. Returns the link used.
pub async fn ensure_dns_address(name: &str, address: Ipv4Addr) -> Result<String, DnsError> {
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|err| DnsError::Interface(format!("opening a netlink socket: {err}")))?;
    let _connection = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(connection));
    let link = match ensure_dummy(&handle, name).await? {
        Some(index) => (index, name.to_string()),
        None => {
            tracing::info!(
                link = LOOPBACK,
                "no dummy links in this kernel; the DNS address goes on loopback"
            );
            let index = link_index(&handle, LOOPBACK)
                .await
                .map_err(|err| netlink_error("looking up", LOOPBACK, err))?
                .ok_or_else(|| DnsError::Interface(format!("no {LOOPBACK} link")))?;
            (index, LOOPBACK.to_string())
        }
    };
    let (index, name) = link;
    handle
        .link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|err| netlink_error("bringing up", &name, err))?;
    handle
        .address()
        .add(index, address.into(), 32)
        .replace()
        .execute()
        .await
        .map_err(|err| netlink_error(&format!("adding {address} to"), &name, err))?;
    Ok(name)
}

/// The index of dummy link `name`, created if missing; `None` when the
/// kernel does not support dummy links (no `dummy` module).
async fn ensure_dummy(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, DnsError> {
    let lookup = |err| netlink_error("looking up", name, err);
    if let Some(index) = link_index(handle, name).await.map_err(lookup)? {
        return Ok(Some(index));
    }
    let created = handle
        .link()
        .add(LinkDummy::new(name).build())
        .execute()
        .await;
    match created {
        Err(err) if errno(&err) == Some(EOPNOTSUPP) => return Ok(None),
        Err(err) if errno(&err) != Some(EEXIST) => {
            return Err(netlink_error("creating", name, err));
        }
        _ => {}
    }
    let index = link_index(handle, name).await.map_err(lookup)?;
    index
        .map(Some)
        .ok_or_else(|| DnsError::Interface(format!("link {name} vanished after creation")))
}

fn netlink_error(context: &str, link: &str, err: rtnetlink::Error) -> DnsError {
    DnsError::Interface(format!("{context} {link}: {err}"))
}

async fn link_index(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<u32>, rtnetlink::Error> {
    let found = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match found {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        Err(err) if errno(&err) == Some(ENODEV) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The errno of a kernel NACK.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}
