package cluster

import (
	"bytes"
	"cmp"
	"fmt"
)

// compareRecords orders two records with the same Kind and Key by the rule documented on
// Record: generation, then priority, then data bytes. It is a total order, so every node
// that has seen the same set of records picks the same winner whatever the arrival order.
func compareRecords(a, b Record) int {
	if c := cmp.Compare(a.Generation, b.Generation); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
		return c
	}
	return bytes.Compare(a.Data, b.Data)
}

// recordID identifies a record across the cluster.
type recordID struct{ Kind, Key string }

func (r Record) id() recordID { return recordID{r.Kind, r.Key} }

// broadcastName names the queued broadcast about an item, so that a newer broadcast about
// the same item replaces an older one still in the queue (memberlist.NamedBroadcast).
func (id recordID) broadcastName() string { return fmt.Sprintf("r\x00%s\x00%s", id.Kind, id.Key) }

func catalogBroadcastName(owner string) string { return "c\x00" + owner }

// validateRecord checks a record against the wire limits before it is stored or sent.
func validateRecord(r Record) error {
	switch {
	case r.Kind == "" || r.Key == "":
		return fmt.Errorf("%w: record kind and key must not be empty", ErrInvalid)
	case len(r.Kind) > maxFieldLen || len(r.Key) > maxFieldLen:
		return fmt.Errorf("%w: record kind or key over %d bytes", ErrInvalid, maxFieldLen)
	case len(r.Data) > maxRecordData:
		return fmt.Errorf("%w: record data of %d bytes over %d", ErrInvalid, len(r.Data), maxRecordData)
	}
	return nil
}

// validateCatalog checks a catalog against the wire limits.
func validateCatalog(c Catalog) error {
	if len(c.Models) > maxCatalogModels {
		return fmt.Errorf("%w: catalog of %d versions over %d", ErrInvalid, len(c.Models), maxCatalogModels)
	}
	for _, v := range c.Models {
		for _, f := range []string{v.Model, v.Version, v.State, v.Provider} {
			if len(f) > maxFieldLen {
				return fmt.Errorf("%w: catalog field %.32q… over %d bytes", ErrInvalid, f, maxFieldLen)
			}
		}
	}
	return nil
}
