package nodeapi

import (
	"reflect"
	"testing"
)

func TestParsePSOutput(t *testing.T) {
	out := "UID          PID    PPID  C STIME TTY          TIME CMD\n" +
		"root           1       0  0 10:00 ?        00:00:01 /sbin/init splash\n" +
		"root         100      90  0 10:01 ?        00:00:00 shoal-init /var/lib/shoal/c\n" +
		"1000         101     100  0 10:01 ?        00:00:00 helper trap  two  spaces\n"
	titles, rows, err := parsePSOutput([]byte(out), []int{100, 101})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"}; !reflect.DeepEqual(titles, want) {
		t.Errorf("titles %q", titles)
	}
	want := [][]string{
		{"root", "100", "90", "0", "10:01", "?", "00:00:00", "shoal-init /var/lib/shoal/c"},
		{"1000", "101", "100", "0", "10:01", "?", "00:00:00", "helper trap two spaces"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows %q", rows)
	}
	// Thread lines ("-" as PID, from `ps m`) follow their process.
	threads := "PID TTY STAT TIME COMMAND\n100 ? - 0:00 init\n- - Ss 0:00 -\n7 ? - 0:00 other\n- - Ss 0:00 -\n"
	_, rows, err = parsePSOutput([]byte(threads), []int{100})
	if err != nil || len(rows) != 2 || rows[1][0] != "-" {
		t.Errorf("thread lines: %q %v", rows, err)
	}
	if _, _, err := parsePSOutput([]byte("USER COMMAND\nroot x\n"), nil); err == nil {
		t.Error("ps output without PID accepted")
	}
	if err := validatePSArgs("-o comm=PID"); err == nil {
		t.Error("renaming a column to PID accepted")
	}
	if err := validatePSArgs("-o pid=PID,comm"); err != nil {
		t.Errorf("pid=PID refused: %v", err)
	}
}
