//! The container stack names the job stream for chaos without linking the store: the two
//! names must stay one.

#[test]
fn the_job_stream_is_the_stores() {
    assert_eq!(wolf_testkit::containers::JOB_STREAM, wolf_store::jetstream::STREAM);
}
