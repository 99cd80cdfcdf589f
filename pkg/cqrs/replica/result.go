package replica

import "github.com/gocqrs/gocqrs/pkg/cqrs/wire"

// Delivery is one message handed to the engine.
type Delivery struct {
	// Payload is the decoded body.
	Payload *wire.Payload
	// Direct is true when the message came on this replica's own routing key
	// (cqrs.<queue>.<cqrs_id>): a direct SYNC or a requeued retry.
	Direct bool
}

// Outcome says what applying a message did.
type Outcome string

// The outcomes of [Engine.Apply]. Failures are errors, not outcomes.
const (
	OutcomeCreated          Outcome = "created"            // a new row was inserted (or the create hook ran)
	OutcomeUpdated          Outcome = "updated"            // an existing row was updated (or the update hook ran)
	OutcomeDeleted          Outcome = "deleted"            // a row was deleted
	OutcomeDeleteMissing    Outcome = "delete_missing"     // DELETE for a row the replica does not have: acknowledged
	OutcomeSkippedStale     Outcome = "skipped_stale"      // SAVE older than the stored revision ("Wrong CQRS sync order")
	OutcomeSkippedDuplicate Outcome = "skipped_duplicate"  // SAVE with the stored revision ("Received duplicate CQRS data")
	OutcomeSkippedTombstone Outcome = "skipped_tombstone"  // SAVE/SYNC older than a DELETE already applied
	OutcomeSkippedIndirect  Outcome = "skipped_indirect"   // broadcast SYNC on a model that takes only direct syncs
	OutcomeRaw              Outcome = "raw"                // handled by a raw replica's handler
	OutcomeSkippedNoHandler Outcome = "skipped_no_handler" // raw replica without a handler for this signal: acknowledged
)

// Applied reports whether the outcome changed (or may have changed) replica state.
func (o Outcome) Applied() bool {
	switch o {
	case OutcomeCreated, OutcomeUpdated, OutcomeDeleted, OutcomeRaw:
		return true
	}
	return false
}

// Result is what [Engine.Apply] reports for one message.
type Result struct {
	Outcome Outcome
	// Gap is how many revisions were skipped between the stored row and an
	// applied SAVE (django-cqrs's "Lost or filtered out N CQRS packages"); 0 otherwise.
	Gap int64
	// Downgrade is true when a SYNC applied an older revision over a newer one.
	Downgrade bool
	// StoredRevision is the revision the replica had before, -1 for no row.
	StoredRevision int64
}
