package nodeapi

import (
	"context"
	"errors"
	"io"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	"github.com/shoal-dev/shoal/runtime/image"
)

// ListImages implements nodev1.NodeServer.
func (s *Server) ListImages(context.Context, *nodev1.ListImagesRequest) (*nodev1.ListImagesResponse, error) {
	imgs, err := s.rt.Images().List()
	if err != nil {
		return nil, grpcError(err)
	}
	out := make([]*nodev1.Image, len(imgs))
	for i, img := range imgs {
		out[i] = &nodev1.Image{
			Id:       img.ID,
			RepoTags: img.RepoTags,
			Created:  timestamppb.New(img.Created),
			Size:     img.Size,
			Labels:   img.Config.Labels,
		}
	}
	return &nodev1.ListImagesResponse{Images: out}, nil
}

// ImportImage implements nodev1.NodeServer.
func (s *Server) ImportImage(stream nodev1.Node_ImportImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return invalidf("import: the first message must be the header")
	}
	// Check the changes before reading a possibly large tarball.
	cfg, err := parseChanges(h.GetChanges())
	if err != nil {
		return grpcError(err)
	}
	// TODO(runtime): the image store records a fixed history comment
	// ("Imported from tarball"); -m needs a comment argument on
	// image.Store.Import. Until then the message is accepted and dropped.
	src := &chunkReader{next: func() ([]byte, error) {
		m, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if m.GetHeader() != nil {
			return nil, invalidf("import: a second header in the stream")
		}
		return m.GetData(), nil
	}}
	img, err := s.rt.Images().Import(src, h.GetRef(), cfg)
	if err != nil {
		if src.err != nil {
			// The client went away or broke the protocol: that, not the
			// truncated tarball it caused, is the error.
			return src.err
		}
		return imageError(err, h.GetRef())
	}
	return stream.SendAndClose(&nodev1.ImportImageResponse{Id: img.ID})
}

// LoadImage implements nodev1.NodeServer.
func (s *Server) LoadImage(stream nodev1.Node_LoadImageServer) error {
	src := &chunkReader{next: func() ([]byte, error) {
		m, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		return m.GetData(), nil
	}}
	imgs, err := s.rt.Images().Load(src)
	if err != nil {
		if src.err != nil {
			return src.err
		}
		return grpcError(err)
	}
	var out []*nodev1.LoadedImage
	for _, img := range imgs {
		if len(img.RepoTags) == 0 {
			out = append(out, &nodev1.LoadedImage{Id: img.ID})
		}
		for _, t := range img.RepoTags {
			out = append(out, &nodev1.LoadedImage{Ref: t, Id: img.ID})
		}
	}
	return stream.SendAndClose(&nodev1.LoadImageResponse{Images: out})
}

// chunkReader reads a client stream of byte chunks as one io.Reader.
type chunkReader struct {
	next func() ([]byte, error)
	buf  []byte
	// err is the stream's failure other than its end, for the caller to
	// return instead of the reader's consumer's error.
	err error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		b, err := r.next()
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			r.err = err
			return 0, err
		}
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// RemoveImage implements nodev1.NodeServer. NoPrune changes nothing: the
// store's images have no parent images to keep.
func (s *Server) RemoveImage(_ context.Context, req *nodev1.RemoveImageRequest) (*nodev1.RemoveImageResponse, error) {
	lines, err := s.rt.Images().Remove(req.GetRef(), req.GetForce())
	if err != nil && len(lines) == 0 {
		return nil, imageError(err, req.GetRef())
	}
	// With lines, the image is gone but some of its files could not be
	// deleted; Open collects them later, so report what was done.
	if err != nil {
		s.log.Warn("image removed, files left", "image.ref", req.GetRef(), "err", err)
	}
	return &nodev1.RemoveImageResponse{Items: deleteItems(lines)}, nil
}

// PruneImages implements nodev1.NodeServer.
//
// With All, every image no container uses is removed first (by ID, all
// its tags at once), then the dangling ones. The store reports reclaimed
// bytes only for its own prune of dangling images; for the images removed
// by ID the reclaimed space is estimated as their size (the uncompressed
// layers, as Docker counts), leaving out their stored blobs.
func (s *Server) PruneImages(_ context.Context, req *nodev1.PruneImagesRequest) (*nodev1.PruneImagesResponse, error) {
	store := s.rt.Images()
	var (
		items     []*nodev1.ImageDeleteItem
		reclaimed uint64
	)
	if req.GetAll() {
		imgs, err := store.List()
		if err != nil {
			return nil, grpcError(err)
		}
		for _, img := range imgs {
			if len(img.RepoTags) == 0 {
				continue // the prune of dangling images below takes it
			}
			lines, err := store.Remove(img.ID, false)
			if errors.Is(err, image.ErrInUse) || errors.Is(err, image.ErrNotFound) {
				continue // used by a container, or removed meanwhile
			}
			items = append(items, deleteItems(lines)...)
			if err != nil {
				return nil, grpcError(err)
			}
			reclaimed += uint64(img.Size)
		}
	}
	ids, n, err := store.Prune()
	for _, id := range ids {
		items = append(items, &nodev1.ImageDeleteItem{Deleted: id})
	}
	if err != nil {
		return nil, grpcError(err)
	}
	reclaimed += uint64(n)
	return &nodev1.PruneImagesResponse{Items: items, SpaceReclaimed: reclaimed}, nil
}

// deleteItems turns the store's "Untagged: x" and "Deleted: y" lines into
// items.
func deleteItems(lines []string) []*nodev1.ImageDeleteItem {
	out := make([]*nodev1.ImageDeleteItem, 0, len(lines))
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "Untagged: "); ok {
			out = append(out, &nodev1.ImageDeleteItem{Untagged: v})
		} else if v, ok := strings.CutPrefix(l, "Deleted: "); ok {
			out = append(out, &nodev1.ImageDeleteItem{Deleted: v})
		}
	}
	return out
}
