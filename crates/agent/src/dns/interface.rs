//! The node-local address of the cluster DNS: a dummy interface holding the
//! DNS Service's ClusterIP, so pods (routed through the bridge) and the host
//! reach this node's server without any NAT rule.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::{LinkDummy, LinkUnspec};

use super::DnsError;

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;

/// Creates dummy link `name` unless it exists, brings it up and gives it
/// `address/32`; idempotent, so a restarted agent just re-runs it.
pub async fn ensure_dns_address(name: &str, address: Ipv4Addr) -> Result<(), DnsError> {
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|err| DnsError::Interface(format!("opening a netlink socket: {err}")))?;
    let _connection = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(connection));
    let netlink = |context: &str, err: rtnetlink::Error| {
        DnsError::Interface(format!("{context} {name}: {err}"))
    };
    if link_index(&handle, name)
        .await
        .map_err(|err| netlink("looking up", err))?
        .is_none()
    {
        let created = handle
            .link()
            .add(LinkDummy::new(name).build())
            .execute()
            .await;
        match created {
            Err(err) if errno(&err) != Some(EEXIST) => return Err(netlink("creating", err)),
            _ => {}
        }
    }
    let index = link_index(&handle, name)
        .await
        .map_err(|err| netlink("looking up", err))?
        .ok_or_else(|| DnsError::Interface(format!("link {name} vanished after creation")))?;
    handle
        .link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|err| netlink("bringing up", err))?;
    handle
        .address()
        .add(index, address.into(), 32)
        .replace()
        .execute()
        .await
        .map_err(|err| netlink(&format!("adding {address} to"), err))
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
