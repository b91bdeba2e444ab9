//! The admission's second half, the same in both modes: once the queue holds the job's envelope
//! durably (and the client has its answer), write its record to the metadata store and its
//! code to the object store, retrying with backoff until both succeed, so a brief database or
//! object-store outage costs no accepted job. Both writes are idempotent: the embedded queue
//! wrote the record in its admission transaction already, and the manager writes both again
//! before it runs the job (the code is durable even if this process dies right after its
//! answer).

use std::time::Duration;

use tracing::Instrument;

use wolf_core::job::code_key;
use wolf_core::{JobRecord, Submission};

use crate::AppState;

/// Start persisting `record` and its code; the record stays readable from this API meanwhile.
pub fn spawn(st: &AppState, record: JobRecord, submission: Submission, code_stored: bool) {
    st.pending_writes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(record.id.clone(), record.clone());
    let st = st.clone();
    // Must finish: it is the only writer of this record's first version. A child of the
    // request's span: the job's trace shows its admission writes.
    let span = tracing::info_span!("storage.persist_admission", job_id = %record.id);
    tokio::spawn(
        async move {
            let id = record.id.clone();
            let mut delay = Duration::from_millis(50);
            loop {
                let code = if code_stored {
                    Ok(())
                } else {
                    st.objects
                        .put(&code_key(&id), submission.code.clone().into_bytes())
                        .instrument(tracing::info_span!("storage.code_put"))
                        .await
                };
                let meta = match code {
                    Ok(()) => st
                        .meta
                        .insert(&record, &submission)
                        .instrument(tracing::info_span!("storage.metadata_insert"))
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                };
                match meta {
                    Ok(()) => break,
                    Err(e) => {
                        metrics::counter!("wolf_persistence_retries_total", "what" => "admission").increment(1);
                        tracing::warn!(job = %id, error = %e, "persisting the accepted job failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
            st.pending_writes.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
        .instrument(span),
    );
}
