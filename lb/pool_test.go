package lb

import (
	"testing"
	"time"
)

func TestChoose(t *testing.T) {
	const now = int64(1000)
	type be struct {
		active   int64
		badUntil int64
		tried    bool
	}
	for _, tc := range []struct {
		name  string
		bs    []be
		start int
		want  int // index, -1 for none
	}{
		{"empty", nil, 0, -1},
		{"fewest connections", []be{{active: 3}, {active: 1}, {active: 2}}, 0, 1},
		{"ties go to the first from start", []be{{}, {}, {}}, 2, 2},
		{"ties wrap around", []be{{active: 1}, {}, {active: 1}, {}}, 2, 3},
		{"put aside is skipped", []be{{badUntil: now + 1}, {active: 5}}, 0, 1},
		{"quarantine over", []be{{badUntil: now}, {active: 5}}, 0, 0},
		{"tried is skipped", []be{{tried: true}, {active: 5}}, 0, 1},
		{"all put aside: the one back soonest", []be{{badUntil: now + 9}, {badUntil: now + 3}, {badUntil: now + 5}}, 0, 1},
		{"all tried", []be{{tried: true}, {tried: true}}, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bs, tried []*backend
			for _, b := range tc.bs {
				x := &backend{}
				x.active.Store(b.active)
				x.badUntil.Store(b.badUntil)
				bs = append(bs, x)
				if b.tried {
					tried = append(tried, x)
				}
			}
			got := choose(bs, tc.start, now, tried)
			want := (*backend)(nil)
			if tc.want >= 0 {
				want = bs[tc.want]
			}
			if got != want {
				t.Errorf("choose = %p, want index %d (%p)", got, tc.want, want)
			}
		})
	}
}

func TestRoundRobinWhenIdle(t *testing.T) {
	p := newPool()
	p.replace([]Backend{{"a", "a:1"}, {"b", "b:1"}, {"c", "c:1"}})
	count := map[string]int{}
	for range 30 {
		be := p.acquire(time.Now(), nil)
		be.dialDone(true, time.Now(), time.Second)
		count[be.TaskID]++
		be.active.Add(-1) // the connection ends before the next one
	}
	for _, id := range []string{"a", "b", "c"} {
		if count[id] != 10 {
			t.Errorf("picks = %v, want 10 each", count)
			break
		}
	}
}

func TestReplaceKeepsCounters(t *testing.T) {
	p := newPool()
	p.replace([]Backend{{"a", "a:1"}, {"b", "b:1"}})
	a := p.acquire(time.Now(), nil)
	a.dialDone(true, time.Now(), time.Second)
	p.replace([]Backend{{"b", "b:1"}, {"a", "a:1"}, {"c", "c:1"}})
	if p.members[a.Backend] != a || a.active.Load() != 1 || a.gone.Load() {
		t.Fatal("a backend that stays lost its state")
	}
	p.replace([]Backend{{"c", "c:1"}})
	if !a.gone.Load() {
		t.Error("a removed backend is not flagged gone")
	}
	if len(*p.snapshot.Load()) != 1 {
		t.Errorf("snapshot = %d backends, want 1", len(*p.snapshot.Load()))
	}
}
