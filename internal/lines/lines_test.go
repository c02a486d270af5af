package lines

import (
	"slices"
	"testing"
)

func TestWriterSplitsLines(t *testing.T) {
	var got []string
	w := NewWriter(func(line string) { got = append(got, line) })
	for _, chunk := range []string{"one\ntw", "o\n", "", "\nthree\nfo", "ur"} {
		w.Write([]byte(chunk))
	}
	if want := []string{"one", "two", "", "three"}; !slices.Equal(got, want) {
		t.Fatalf("before Close: %q, want %q", got, want)
	}
	w.Close()
	w.Close()
	if want := []string{"one", "two", "", "three", "four"}; !slices.Equal(got, want) {
		t.Fatalf("after Close: %q, want %q", got, want)
	}
}
