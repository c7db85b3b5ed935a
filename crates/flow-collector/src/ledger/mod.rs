//! The collector's durable state: the chunks it accepted (an append-only log, synced
//! before a chunk is acknowledged: the set of stored batch IDs is kept with the data,
//! in the same write) and a checkpoint of what has been emitted.
