//! What the engine may ask of the node synchronously: its records (from
//! the sled store; reads do not block in practice, sled's page cache
//! answers them) and whether content is at hand (a blob stored, or a
//! module already compiled) or can be sent (a blob stored).

use agora_market::records::{Host, RecordError};
use agora_protocol::ContentId;

use super::records_view::RecordsOnly;
use crate::executor::Executor;
use crate::store::Store;

/// The node's store and executor, as the engine's host.
pub(super) struct NodeHost {
    store: Store,
    executor: Executor,
}

impl NodeHost {
    pub(super) fn new(store: Store, executor: Executor) -> NodeHost {
        NodeHost { store, executor }
    }
}

impl Host for NodeHost {
    fn record(&self, key: &str) -> Result<Option<Vec<u8>>, RecordError> {
        RecordsOnly(&self.store).record(key)
    }

    fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        RecordsOnly(&self.store).records(prefix)
    }

    fn records_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        RecordsOnly(&self.store).records_from(prefix, from, limit)
    }

    fn records_rev(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        RecordsOnly(&self.store).records_rev(prefix, limit)
    }

    fn holds(&self, id: &ContentId) -> bool {
        self.store.content().has(id) || self.executor.cached(id).is_some()
    }

    fn stored_size(&self, id: &ContentId) -> Option<u64> {
        if !self.store.content().has(id) {
            return None;
        }
        self.store.content().size(id)
    }
}
