//go:build tools

// Package deps pins modules that packages being written in parallel will
// import, so that go.mod and go.sum stay complete meanwhile. It is removed
// once real code imports them.
package deps

import (
	_ "github.com/google/nftables"
	_ "github.com/miekg/dns"
	_ "github.com/pires/go-proxyproto"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
)
