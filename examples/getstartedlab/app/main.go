// Command app is the demo web service of the getstartedlab stack: the
// static Go counterpart of Docker's "get started" Python app. It answers
// every request with the task's hostname and a visit counter, so that
// requests spread over the replicas show which task answered.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

func main() {
	addr := flag.String("addr", ":80", "listen address")
	flag.Parse()
	host, _ := os.Hostname()
	name := os.Getenv("NAME")
	if name == "" {
		name = "World"
	}
	var visits atomic.Int64
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := visits.Add(1)
		fmt.Fprintf(w, "Hello %s!\nHostname: %s\nVisits: %d\n", name, host, n)
	})
	log.Printf("listening on %s as %s", *addr, host)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
