//! Two-phase create: a client reserves a container's id and name (and
//! later claims its volumes) before it builds the container, and the
//! monitor holds them until that client's `Create` or until its connection
//! closes. Every client of one monitor sees the same creates in flight, so
//! none can take the name, remove a claimed volume, or reconcile away the
//! network of a container that is being made. The reservation lives with
//! the connection, never on disk: a create in flight dies with its client.

use super::*;
use crate::protocol::Reservation;

/// One create in flight.
#[derive(Debug, Clone)]
pub(super) struct Held {
    name: String,
    volumes: Vec<String>,
    /// The connection that holds it.
    token: u64,
}

impl Monitor {
    /// Forgets reservations whose connection is gone.
    fn prune_reservations(&mut self) {
        let Some(server) = &self.server else {
            self.reserved.clear();
            return;
        };
        self.reserved.retain(|_, h| {
            server
                .conns
                .iter()
                .any(|c| c.token == h.token && !c.finished())
        });
    }

    /// Refuses `name` if a container other than `id`, or a create in
    /// flight of another id, has it.
    pub(super) fn check_name_free(&mut self, name: &str, id: &str) -> Result<()> {
        self.prune_reservations();
        let holder = self
            .recs
            .values()
            .find(|r| r.name == name && r.id != id)
            .map(|r| r.id.clone())
            .or_else(|| {
                self.reserved
                    .iter()
                    .find(|(rid, h)| h.name == name && rid.as_str() != id)
                    .map(|(rid, _)| rid.clone())
            });
        match holder {
            Some(other) => Err(Error::NameInUse {
                name: name.into(),
                id: other,
            }),
            None => Ok(()),
        }
    }

    pub(super) fn reserve(&mut self, token: u64, id: &str, name: &str) -> Result<()> {
        state::validate_id(id)?;
        if self.recs.contains_key(id) {
            return Err(Error::AlreadyExists(id.into()));
        }
        self.check_name_free(name, id)?;
        if self.reserved.get(id).is_some_and(|h| h.token != token) {
            return Err(Error::AlreadyExists(id.into()));
        }
        self.reserved.insert(
            id.into(),
            Held {
                name: name.into(),
                volumes: Vec::new(),
                token,
            },
        );
        Ok(())
    }

    pub(super) fn claim(&mut self, token: u64, id: &str, volumes: Vec<String>) -> Result<()> {
        self.prune_reservations();
        match self.reserved.get_mut(id) {
            Some(h) if h.token == token => {
                for v in volumes {
                    if !h.volumes.contains(&v) {
                        h.volumes.push(v);
                    }
                }
                Ok(())
            }
            _ => Err(Error::NotFound(format!("no create in flight of {id}"))),
        }
    }

    pub(super) fn unreserve(&mut self, token: u64, id: &str) {
        if self.reserved.get(id).is_some_and(|h| h.token == token) {
            self.reserved.remove(id);
        }
    }

    pub(super) fn reservations(&mut self) -> Vec<Reservation> {
        self.prune_reservations();
        self.reserved_list()
    }

    /// The reservations as they are (some may belong to closed
    /// connections: counting those only keeps a volume a moment longer).
    pub(super) fn reserved_list(&self) -> Vec<Reservation> {
        self.reserved
            .iter()
            .map(|(id, h)| Reservation {
                id: id.clone(),
                name: h.name.clone(),
                volumes: h.volumes.clone(),
            })
            .collect()
    }
}
