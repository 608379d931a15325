// Package identity makes object ids like Docker swarm's: 25 random base36
// characters.
package identity

import (
	"crypto/rand"
	"math/big"
)

// Len is the length of an id.
const Len = 25

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

// NewID returns a new random id.
func NewID() string {
	// 25 base36 digits hold 129 bits; draw 128 random bits and pad, as
	// swarmkit does, so every id has the same length.
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("identity: no randomness: " + err.Error())
	}
	s := new(big.Int).SetBytes(b[:]).Text(36)
	for len(s) < Len {
		s = "0" + s
	}
	return s
}
