package image

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// layerInfo is what reading a layer blob once tells us about it.
type layerInfo struct {
	digest    v1.Hash // of the blob as stored
	size      int64   // of the blob as stored
	mediaType types.MediaType
	diffID    v1.Hash // of the uncompressed tar
	usize     int64   // of the uncompressed tar
}

// scanLayer reads a layer blob (plain, gzip or zstd tar) in one pass: it
// hashes the blob and its uncompressed stream, copies the uncompressed
// stream to tee when tee is not nil, and unpacks it into dir when dir is not
// "". Compression is told from the content, not from a media type, because
// archives in the wild mislabel it.
func scanLayer(blob io.Reader, dir string, tee io.Writer) (layerInfo, error) {
	rawHash := sha256.New()
	raw := &countingReader{r: io.TeeReader(blob, rawHash)}
	br := bufio.NewReaderSize(raw, 1<<16)
	magic, _ := br.Peek(len(zstdMagic))

	info := layerInfo{mediaType: types.OCIUncompressedLayer}
	var src io.Reader = br
	if bytes.HasPrefix(magic, gzipMagic) || bytes.HasPrefix(magic, zstdMagic) {
		info.mediaType = types.OCILayer
		if bytes.HasPrefix(magic, zstdMagic) {
			info.mediaType = types.OCILayerZStd
		}
		rc, err := decompress(br)
		if err != nil {
			return info, invalidf("decompress: %w", err)
		}
		defer rc.Close()
		src = rc
	}

	uHash := sha256.New()
	w := io.Writer(uHash)
	if tee != nil {
		w = io.MultiWriter(uHash, tee)
	}
	// in records read errors (a broken blob: invalid input), so that they
	// can be told from write errors of the tee (a full disk: our problem).
	in := &errReader{r: src}
	ureader := &countingReader{r: io.TeeReader(in, w)}
	if dir != "" {
		if err := unpack(ureader, dir); err != nil {
			return info, err
		}
	}
	// The diff ID covers the whole stream, including the zero blocks and
	// padding after the tar's last entry, so read to the end.
	if _, err := io.Copy(io.Discard, ureader); err != nil {
		if in.err != nil {
			return info, invalidf("read layer: %w", err)
		}
		return info, fmt.Errorf("copy layer: %w", err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return info, invalidf("read layer: %w", err)
	}
	info.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(rawHash.Sum(nil))}
	info.size = raw.n
	info.diffID = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(uHash.Sum(nil))}
	info.usize = ureader.n
	return info, nil
}

// decompress uses go-containerregistry's layer decompression, which knows
// gzip and zstd, so that shoal needs no zstd module of its own.
func decompress(r io.Reader) (io.ReadCloser, error) {
	l, err := partial.CompressedToLayer(streamLayer{r: r})
	if err != nil {
		return nil, err
	}
	return l.Uncompressed()
}

// streamLayer presents a compressed stream as the minimal
// partial.CompressedLayer; only Compressed is ever called.
type streamLayer struct{ r io.Reader }

var errStreamOnly = errors.New("stream layer: only the content is known")

func (l streamLayer) Compressed() (io.ReadCloser, error) { return io.NopCloser(l.r), nil }
func (streamLayer) Digest() (v1.Hash, error)             { return v1.Hash{}, errStreamOnly }
func (streamLayer) Size() (int64, error)                 { return 0, errStreamOnly }
func (streamLayer) MediaType() (types.MediaType, error)  { return "", errStreamOnly }

// chainIDs computes the OCI chain ID of every layer: the first is its diff
// ID, each next one sha256("<parent chain> <diff ID>"). A chain ID names a
// layer together with everything below it, which is what an unpacked
// overlay lower dir stands for when it is shared between images.
func chainIDs(diffIDs []v1.Hash) []v1.Hash {
	out := make([]v1.Hash, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		sum := sha256.Sum256([]byte(out[i-1].String() + " " + d.String()))
		out[i] = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	}
	return out
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}
