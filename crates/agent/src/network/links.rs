//! Links, addresses and routes through rtnetlink, each operation idempotent so
//! attach and setup can be re-run after a crash halfway.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio_util::task::AbortOnDropHandle;

use super::NetworkError;
use super::netns::Namespace;

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;

/// The routing protocol number marking routes this network owns (any value not
/// in /etc/iproute2/rt_protos works), so replacing "our" peer routes never
/// touches routes someone else installed.
const GANTRY_ROUTE_PROTOCOL: u8 = 0xa7;

/// An rtnetlink connection bound to one network namespace; its background task
/// ends when this is dropped.
pub(crate) struct Links {
    handle: Handle,
    _connection: AbortOnDropHandle<()>,
}

impl Links {
    /// A connection in the calling thread's namespace (a netlink socket acts in
    /// the namespace it was created in, whichever thread later uses it).
    pub(crate) fn connect_here() -> Result<Self, NetworkError> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|err| NetworkError::io("opening a netlink socket", err))?;
        Ok(Links {
            handle,
            _connection: AbortOnDropHandle::new(tokio::spawn(connection)),
        })
    }

    /// A connection inside `namespace`, whose socket is created on a thread
    /// that entered it.
    pub(crate) async fn connect_in(namespace: &Namespace) -> Result<Self, NetworkError> {
        let runtime = tokio::runtime::Handle::current();
        let (connection, handle) = namespace
            .run(move || {
                let _entered = runtime.enter();
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(|err| NetworkError::io("opening a netlink socket", err))?;
                Ok((connection, handle))
            })
            .await?;
        Ok(Links {
            handle,
            _connection: AbortOnDropHandle::new(tokio::spawn(connection)),
        })
    }

    /// The index of link `name`, if it exists.
    pub(crate) async fn index(&self, name: &str) -> Result<Option<u32>, NetworkError> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(link) => Ok(link.map(|link| link.header.index)),
            Err(err) if errno(&err) == Some(ENODEV) => Ok(None),
            Err(err) => Err(NetworkError::netlink(
                format!("looking up link {name}"),
                err,
            )),
        }
    }

    /// Creates bridge `name` unless it exists, brings it up and gives it
    /// `address`; returns its index.
    pub(crate) async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
    ) -> Result<u32, NetworkError> {
        if self.index(name).await?.is_none() {
            let created = self
                .handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await;
            ignore(created, EEXIST)
                .map_err(|err| NetworkError::netlink(format!("creating bridge {name}"), err))?;
        }
        let index = self.require_index(name).await?;
        self.up(index, name).await?;
        self.ensure_address(index, address).await?;
        Ok(index)
    }

    /// Deletes link `name`; missing is fine.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), NetworkError> {
        let Some(index) = self.index(name).await? else {
            return Ok(());
        };
        let deleted = self.handle.link().del(index).execute().await;
        ignore(deleted, ENODEV)
            .map_err(|err| NetworkError::netlink(format!("deleting link {name}"), err))
    }

    /// Creates the veth pair `name` <-> `peer` here, replacing leftovers of an
    /// interrupted attempt, then moves `peer` into `namespace`.
    pub(crate) async fn create_veth_into(
        &self,
        name: &str,
        peer: &str,
        namespace: &Namespace,
    ) -> Result<(), NetworkError> {
        self.delete(name).await?;
        self.delete(peer).await?;
        let context = || format!("creating veth pair {name}/{peer}");
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(|err| NetworkError::netlink(context(), err))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(namespace.file());
        self.handle
            .link()
            .change(LinkUnspec::new_with_name(peer).setns_by_fd(fd).build())
            .execute()
            .await
            .map_err(|err| {
                NetworkError::netlink(format!("moving {peer} into the pod namespace"), err)
            })
    }

    /// Renames link `from` to `to` (it must be down, as a fresh veth end is).
    pub(crate) async fn rename(&self, from: &str, to: &str) -> Result<(), NetworkError> {
        let index = self.require_index(from).await?;
        self.handle
            .link()
            .change(
                LinkUnspec::new_with_index(index)
                    .name(to.to_string())
                    .build(),
            )
            .execute()
            .await
            .map_err(|err| NetworkError::netlink(format!("renaming {from} to {to}"), err))
    }

    /// Enslaves link `port` to `bridge`, turns hairpin mode on (so a pod can reach
    /// itself through a service address) and brings the port up.
    pub(crate) async fn join_bridge(&self, port: &str, bridge: u32) -> Result<(), NetworkError> {
        let index = self.require_index(port).await?;
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).controller(bridge).build())
            .execute()
            .await
            .map_err(|err| NetworkError::netlink(format!("adding {port} to the bridge"), err))?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(|err| NetworkError::netlink(format!("setting hairpin mode on {port}"), err))?;
        self.up(index, port).await
    }

    /// Brings link `name` up, giving it `address` if set; returns its index.
    pub(crate) async fn configure(
        &self,
        name: &str,
        address: Option<Ipv4Net>,
    ) -> Result<u32, NetworkError> {
        let index = self.require_index(name).await?;
        if let Some(address) = address {
            self.ensure_address(index, address).await?;
        }
        self.up(index, name).await?;
        Ok(index)
    }

    /// Sets the default route via `gateway` on link `index`.
    pub(crate) async fn set_default_route(
        &self,
        gateway: Ipv4Addr,
        index: u32,
    ) -> Result<(), NetworkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|err| {
                NetworkError::netlink(format!("setting the default route via {gateway}"), err)
            })
    }

    /// The routes this network owns whose destination lies in `within`.
    pub(crate) async fn owned_routes(
        &self,
        within: Ipv4Net,
    ) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>, NetworkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|err| NetworkError::netlink("listing routes", err))?;
        Ok(routes
            .iter()
            .filter(|route| {
                route.header.protocol == RouteProtocol::Other(GANTRY_ROUTE_PROTOCOL)
                    && route.header.table == RouteHeader::RT_TABLE_MAIN
            })
            .filter_map(destination_and_gateway)
            .filter(|(destination, _)| within.contains(destination))
            .collect())
    }

    /// Adds or replaces the owned route to `destination` via `gateway`.
    pub(crate) async fn replace_route(
        &self,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(), NetworkError> {
        self.handle
            .route()
            .add(owned_route(destination, gateway))
            .replace()
            .execute()
            .await
            .map_err(|err| {
                NetworkError::netlink(format!("routing {destination} via {gateway}"), err)
            })
    }

    /// Deletes the owned route to `destination` via `gateway`; missing is fine.
    pub(crate) async fn delete_route(
        &self,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(), NetworkError> {
        let deleted = self
            .handle
            .route()
            .del(owned_route(destination, gateway))
            .execute()
            .await;
        ignore(deleted, ESRCH).map_err(|err| {
            NetworkError::netlink(format!("deleting the route to {destination}"), err)
        })
    }

    async fn require_index(&self, name: &str) -> Result<u32, NetworkError> {
        self.index(name)
            .await?
            .ok_or_else(|| NetworkError::MissingLink(name.to_string()))
    }

    async fn up(&self, index: u32, name: &str) -> Result<(), NetworkError> {
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|err| NetworkError::netlink(format!("bringing {name} up"), err))
    }

    async fn ensure_address(&self, index: u32, address: Ipv4Net) -> Result<(), NetworkError> {
        self.handle
            .address()
            .add(index, address.addr().into(), address.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(|err| NetworkError::netlink(format!("adding address {address}"), err))
    }
}

fn owned_route(destination: Ipv4Net, gateway: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .gateway(gateway)
        .protocol(RouteProtocol::Other(GANTRY_ROUTE_PROTOCOL))
        .build()
}

fn destination_and_gateway(route: &RouteMessage) -> Option<(Ipv4Net, Ipv4Addr)> {
    let mut destination = None;
    let mut gateway = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            _ => {}
        }
    }
    let destination = Ipv4Net::new(destination?, route.header.destination_prefix_length).ok()?;
    Some((destination, gateway?))
}

/// The errno of a kernel NACK.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

/// Treats the kernel answering `expected` (already exists, already gone) as success.
fn ignore(result: Result<(), rtnetlink::Error>, expected: i32) -> Result<(), rtnetlink::Error> {
    match result {
        Err(err) if errno(&err) == Some(expected) => Ok(()),
        other => other,
    }
}
