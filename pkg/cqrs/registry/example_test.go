package registry_test

import (
	"database/sql"
	"fmt"
	"time"

	"github.com/gocqrs/gocqrs/pkg/cqrs/registry"
)

// A Django-style Book master declared from the struct sqlx scans it into.
// The foreign key column author_id goes on the wire as "author", the price
// is a NUMERIC sent as Django sends decimals, and the sync columns are left
// to gocqrs.
func ExampleFieldsOf() {
	type Book struct {
		ID        int64        `db:"id"`
		Title     string       `db:"title"`
		AuthorID  int64        `db:"author_id" cqrs:"name=author"`
		Price     float64      `db:"price" cqrs:"decimal"`
		Published sql.NullTime `db:"published" cqrs:"date"`
		Tags      []string     `db:"tags"`
		Revision  int          `db:"cqrs_revision"`
		Updated   time.Time    `db:"cqrs_updated"`
		Cached    string       `db:"-"`
	}
	fields, err := registry.FieldsOf(Book{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range fields {
		fmt.Printf("%-9s column %-9s %s\n", f.Name, f.ColumnName(), f.Kind)
	}
	err = registry.New().RegisterMaster(registry.MasterModel{CQRSID: "book", Table: "book", Fields: fields})
	fmt.Println("registered:", err == nil)
	// Output:
	// id        column id        int
	// title     column title     string
	// author    column author_id int
	// price     column price     decimal
	// published column published date
	// tags      column tags      json
	// registered: true
}
