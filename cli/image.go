package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *App) newImageCommand() *cobra.Command {
	return newGroup("image", "Manage images on this node",
		a.newImageListCommand(),
		a.newImageImportCommand(),
		a.newImageLoadCommand(),
		a.newImageRemoveCommand(),
		a.newImagePruneCommand(),
	)
}

const defaultImageTableFormat = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"

var imageHeader = map[string]string{
	"Repository":   "REPOSITORY",
	"Tag":          "TAG",
	"Digest":       "DIGEST",
	"ID":           "IMAGE ID",
	"CreatedSince": "CREATED",
	"CreatedAt":    "CREATED AT",
	"Size":         "SIZE",
}

// imageRow is one `image ls` line (one per repository:tag).
type imageRow struct {
	img       ImageSummary
	repo, tag string
	digest    string
	trunc     bool
	now       time.Time
}

func (r *imageRow) MarshalJSON() ([]byte, error) { return marshalRow(r) }

// ID is the image id, 12 hex characters unless --no-trunc.
func (r *imageRow) ID() string {
	if r.trunc {
		return truncateID(r.img.ID)
	}
	return r.img.ID
}

// Repository is the name part of the tag, or <none>.
func (r *imageRow) Repository() string { return r.repo }

// Tag is the tag, or <none>.
func (r *imageRow) Tag() string { return r.tag }

// Digest is the repository digest, or <none>.
func (r *imageRow) Digest() string { return r.digest }

// CreatedSince is the image's age ("2 days ago").
func (r *imageRow) CreatedSince() string {
	if r.img.Created.IsZero() {
		return "N/A"
	}
	return humanDuration(r.now.Sub(r.img.Created)) + " ago"
}

// CreatedAt is when the image was built.
func (r *imageRow) CreatedAt() string { return r.img.Created.Format("2006-01-02 15:04:05 -0700 MST") }

// Size is the image's size in decimal units ("187MB").
func (r *imageRow) Size() string { return humanSize(float64(r.img.Size), 3) }

func splitRepoTag(ref string) (repo, tag string) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, "<none>"
	}
	return ref[:i], ref[i+1:]
}

func (a *App) newImageListCommand() *cobra.Command {
	var (
		all, quiet, noTrunc, digests bool
		format                       string
	)
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List images on this node",
		Long:    "List images on this node.",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			images, err := a.Node.ImageList(cmd.Context(), all)
			if err != nil {
				return err
			}
			sort.SliceStable(images, func(i, j int) bool { return images[j].Created.Before(images[i].Created) })
			now := a.Now()
			var rows []any
			seen := map[string]bool{}
			for _, img := range images {
				if quiet && format == "" {
					// One line per image, not per tag.
					if seen[img.ID] {
						continue
					}
					seen[img.ID] = true
				}
				tags := img.RepoTags
				if len(tags) == 0 {
					tags = []string{"<none>:<none>"}
				}
				for _, t := range tags {
					repo, tag := splitRepoTag(t)
					digest := "<none>"
					for _, d := range img.RepoDigests {
						if strings.HasPrefix(d, repo+"@") {
							digest = strings.TrimPrefix(d, repo+"@")
						}
					}
					rows = append(rows, &imageRow{img: img, repo: repo, tag: tag, digest: digest, trunc: !noTrunc, now: now})
					if quiet && format == "" {
						break
					}
				}
			}
			table := defaultImageTableFormat
			if digests {
				table = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
			}
			f := chooseFormat(format, quiet, table,
				`repository: {{.Repository}}\ntag: {{.Tag}}\nimage_id: {{.ID}}\ncreated_at: {{.CreatedAt}}\nvirtual_size: {{.Size}}\n`,
				`image_id: {{.ID}}`)
			return writeList(a.Stdout, f, imageHeader, rows)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&all, "all", "a", false, "Show all images (default hides intermediate images)")
	f.BoolVarP(&quiet, "quiet", "q", false, "Only show image IDs")
	f.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	f.BoolVar(&digests, "digests", false, "Show digests")
	f.StringVar(&format, "format", "", formatHelp)
	return cmd
}

func (a *App) newImageImportCommand() *cobra.Command {
	var o ImageImportOptions
	cmd := &cobra.Command{
		Use:   "import [OPTIONS] file|- [REPOSITORY[:TAG]]",
		Short: "Import the contents from a tarball to create a filesystem image",
		Long:  "Import the contents from a tarball to create a filesystem image.",
		Args:  rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := args[0]
			if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
				return errors.New("importing from a URL is not supported: download the tarball and import the file")
			}
			ref := ""
			if len(args) == 2 {
				ref = args[1]
			}
			var r io.Reader = a.Stdin
			if src != "-" {
				f, err := os.Open(src)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			id, err := a.Node.ImageImport(cmd.Context(), r, ref, o)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, id)
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&o.Changes, "change", "c", nil, "Apply Dockerfile instruction to the created image")
	cmd.Flags().StringVarP(&o.Message, "message", "m", "", "Set commit message for imported image")
	return cmd
}

func (a *App) newImageLoadCommand() *cobra.Command {
	var (
		input string
		quiet bool
	)
	cmd := &cobra.Command{
		Use:   "load [OPTIONS]",
		Short: "Load an image from a tar archive or STDIN",
		Long:  "Load an image from a `docker save` or OCI tar archive, or STDIN.",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r io.Reader = a.Stdin
			if input != "" {
				f, err := os.Open(input)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			} else if a.StdinIsTerminal() {
				return errors.New("requested load from stdin, but stdin is empty")
			}
			loaded, err := a.Node.ImageLoad(cmd.Context(), r)
			if err != nil {
				return err
			}
			if quiet {
				return nil
			}
			for _, l := range loaded {
				if l.Ref != "" {
					fmt.Fprintf(a.Stdout, "Loaded image: %s\n", l.Ref)
				} else {
					fmt.Fprintf(a.Stdout, "Loaded image ID: %s\n", l.ID)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "Read from tar archive file, instead of STDIN")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Suppress the load output")
	return cmd
}

func (a *App) printDeleteItems(items []ImageDeleteItem) {
	for _, d := range items {
		if d.Untagged != "" {
			fmt.Fprintln(a.Stdout, "Untagged:", d.Untagged)
		}
		if d.Deleted != "" {
			fmt.Fprintln(a.Stdout, "Deleted:", d.Deleted)
		}
	}
}

func (a *App) newImageRemoveCommand() *cobra.Command {
	var force, noPrune bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] IMAGE [IMAGE...]",
		Aliases: []string{"remove", "rmi"},
		Short:   "Remove one or more images",
		Long:    "Remove one or more images from this node.",
		Args:    requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, ref := range args {
				items, err := a.Node.ImageRemove(cmd.Context(), ref, force, noPrune)
				if err != nil {
					if errors.Is(err, ErrNotImplemented) {
						return err
					}
					errs = append(errs, err)
					continue
				}
				a.printDeleteItems(items)
			}
			return joinErrors(errs)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Force removal of the image")
	cmd.Flags().BoolVar(&noPrune, "no-prune", false, "Do not delete untagged parents")
	return cmd
}

func (a *App) newImagePruneCommand() *cobra.Command {
	var all, force bool
	cmd := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove unused images",
		Long:  "Remove unused images from this node.",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			warning := "WARNING! This will remove all dangling images."
			if all {
				warning = "WARNING! This will remove all images without at least one container associated to them."
			}
			if !force && !a.confirm(warning) {
				return nil
			}
			items, reclaimed, err := a.Node.ImagePrune(cmd.Context(), all)
			if err != nil {
				return err
			}
			if len(items) > 0 {
				fmt.Fprintln(a.Stdout, "Deleted Images:")
				a.printDeleteItems(items)
				fmt.Fprintln(a.Stdout)
			}
			fmt.Fprintln(a.Stdout, "Total reclaimed space:", humanSize(float64(reclaimed), 4))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Remove all unused images, not just dangling ones")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	return cmd
}

// confirm asks docker's question on stdout and reads y/N from stdin.
func (a *App) confirm(warning string) bool {
	fmt.Fprintf(a.Stdout, "%s\nAre you sure you want to continue? [y/N] ", warning)
	line, _ := bufio.NewReader(a.Stdin).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes"
}
