package image

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
)

// Remove untags ref. When no tag is left, or ref names an ID, it deletes the
// image, its blobs and the layer dirs no other image shares, and returns the
// "Untagged: …" and "Deleted: …" lines Docker prints (the image ID, then the
// chain IDs of the freed layers, top first).
//
// Removing the last tag of an image, or an image by ID, is refused with
// ErrInUse while InUse reports a container using the image. force untags it
// anyway but keeps the image, dangling, because the container's rootfs is
// mounted on its layers; a later Prune removes it once it is unused.
func (s *Store) Remove(ref string, force bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, tag, err := s.st.resolve(ref)
	if err != nil {
		return nil, err
	}
	tags := s.st.tagsOf(rec.id)
	next := s.st.clone()
	var lines []string
	untag := func(t string) {
		delete(next.tags, t)
		lines = append(lines, "Untagged: "+t)
	}

	if tag != "" && len(tags) > 1 {
		// Other tags keep the image; a container using it is no obstacle.
		untag(tag)
		if err := s.persist(next); err != nil {
			return nil, fmt.Errorf("remove %s: %w", ref, err)
		}
		s.st = next
		return lines, nil
	}

	container, used := s.inUse(rec.id)
	if used && (!force || len(tags) == 0) {
		return nil, classf(ErrInUse, "conflict: unable to remove image %s: image is being used by container %s", ref, container)
	}
	if tag != "" {
		untag(tag)
	} else {
		for _, t := range tags {
			untag(t)
		}
	}
	if !used {
		delete(next.images, rec.id)
	}
	if err := s.persist(next); err != nil {
		return nil, fmt.Errorf("remove %s: %w", ref, err)
	}
	s.st = next
	if used {
		return lines, nil
	}
	deleted, _, err := s.deleteContent([]*record{rec})
	lines = append(lines, deleted...)
	if err != nil {
		return lines, fmt.Errorf("remove %s: %w", ref, err)
	}
	return lines, nil
}

// Prune removes dangling (untagged) images that no container uses. It
// returns their IDs, sorted, and the bytes reclaimed: the sizes of the blobs
// deleted plus the uncompressed sizes of the layers deleted.
func (s *Store) Prune() ([]string, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byID := s.st.tagsByID()
	next := s.st.clone()
	var removed []*record
	for id, rec := range s.st.images {
		if len(byID[id]) > 0 {
			continue
		}
		if _, used := s.inUse(id); used {
			continue
		}
		delete(next.images, id)
		removed = append(removed, rec)
	}
	if len(removed) == 0 {
		return []string{}, 0, nil
	}
	sort.Slice(removed, func(i, j int) bool { return removed[i].id < removed[j].id })
	ids := make([]string, len(removed))
	for i, rec := range removed {
		ids[i] = rec.id
	}
	if err := s.persist(next); err != nil {
		return nil, 0, fmt.Errorf("prune: %w", err)
	}
	s.st = next
	_, reclaimed, err := s.deleteContent(removed)
	if err != nil {
		return ids, reclaimed, fmt.Errorf("prune: %w", err)
	}
	return ids, reclaimed, nil
}

// deleteContent deletes the blobs and layer dirs of removed images that the
// current state no longer references. It runs after index.json stopped
// naming them, so a crash half way leaves only garbage for Open to collect.
func (s *Store) deleteContent(removed []*record) (lines []string, reclaimed int64, err error) {
	blobs, chains := s.st.referenced()
	var errs []error
	for _, rec := range removed {
		lines = append(lines, "Deleted: "+rec.id)
		for _, b := range rec.blobs {
			if blobs[b.Hex] {
				continue
			}
			blobs[b.Hex] = true // shared by two removed images: delete once
			p := s.blobPath(b)
			if fi, err := os.Lstat(p); err == nil {
				reclaimed += fi.Size()
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		for i, c := range slices.Backward(rec.chains) {
			if chains[c.Hex] {
				continue
			}
			chains[c.Hex] = true
			if err := s.removeLayer(c.Hex); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
			reclaimed += rec.layerSizes[i]
			lines = append(lines, "Deleted: "+c.String())
		}
	}
	return lines, reclaimed, errors.Join(errs...)
}
