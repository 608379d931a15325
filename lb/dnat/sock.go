package dnat

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// sockBuf is the send and receive buffer of the netlink socket a Sync
// uses. The library writes a whole batch with one sendmsg, which the
// kernel refuses (EMSGSIZE) beyond the send buffer, 208 KiB by default:
// a node with 150 services makes about 500 KiB. And it asks an ack for
// every message, each of which takes about 1 KiB of the receive buffer
// until read; a lost ack is reported as ENOBUFS although the transaction
// committed. nft raises both buffers to the batch's needs in the same
// way. 32 MiB is a bound, not an allocation; it is enough for about ten
// thousand frontends.
const sockBuf = 32 << 20

// rawConner is what setSockBuf needs of the library's socket.
type rawConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// setSockBuf raises the buffers of an nftables connection's socket to
// sockBuf; it is passed as nftables.WithSockOptions(setSockBuf), where Go
// infers C as the library's *netlink.Conn, so that this package need not
// import mdlayher/netlink itself. The FORCE options, which go past the
// sysctl maximum, need CAP_NET_ADMIN like nftables itself; without it the
// plain options give what the sysctl allows.
func setSockBuf[C rawConner](c C) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var errs error
	err = rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], sockBuf); err != nil {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], sockBuf); err != nil {
					errs = errors.Join(errs, fmt.Errorf("netlink socket buffer: %w", err))
				}
			}
		}
	})
	return errors.Join(err, errs)
}
