// Command goc2sp checks Puente's audit-log artifacts with the Go reference
// implementations of C2SP signed notes and RFC 6962/9162 trees
// (golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog), so the
// node's formats are verified by code nobody on the project wrote.
//
//	goc2sp note VKEY_FILE NOTE_FILE          verify a signed note, print its text
//	goc2sp export DIR                        replay DIR/entries.jsonl, compare with DIR/checkpoint
//	goc2sp inclusion VKEY_FILE PROOF_JSON    check an inclusion proof against its checkpoint
//	goc2sp consistency VKEY_FILE PROOF_JSON  check a consistency proof between two checkpoints
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func read(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return data
}

// open verifies a signed note with one verifier key and parses its checkpoint body.
func open(vkey string, msg []byte) (string, int64, tlog.Hash) {
	verifier, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		fail("verifier key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		fail("note: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("checkpoint: too few lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		fail("checkpoint root: %v", err)
	}
	var root tlog.Hash
	copy(root[:], raw)
	return lines[0], size, root
}

func hashes(values []string) []tlog.Hash {
	out := make([]tlog.Hash, len(values))
	for i, v := range values {
		raw, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(raw) != tlog.HashSize {
			fail("proof hash %d: %v", i, err)
		}
		copy(out[i][:], raw)
	}
	return out
}

type memory []tlog.Hash

func (m memory) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = m[x]
	}
	return out, nil
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: goc2sp note|export|inclusion|consistency ...")
	}
	switch os.Args[1] {
	case "note":
		verifier, err := note.NewVerifier(strings.TrimSpace(string(read(os.Args[2]))))
		if err != nil {
			fail("verifier key: %v", err)
		}
		n, err := note.Open(read(os.Args[3]), note.VerifierList(verifier))
		if err != nil {
			fail("note: %v", err)
		}
		fmt.Print(n.Text)
	case "export":
		dir := os.Args[2]
		origin, size, root := open(string(read(dir+"/vkey")), read(dir+"/checkpoint"))
		file, err := os.Open(dir + "/entries.jsonl")
		if err != nil {
			fail("%v", err)
		}
		scanner := bufio.NewScanner(file)
		scanner.Buffer(make([]byte, 1<<20), 1<<24)
		var stored memory
		var n int64
		for scanner.Scan() && n < size {
			more, err := tlog.StoredHashes(n, scanner.Bytes(), stored)
			if err != nil {
				fail("%v", err)
			}
			stored = append(stored, more...)
			n++
		}
		if n != size {
			fail("the checkpoint covers %d entries, the export has %d", size, n)
		}
		got, err := tlog.TreeHash(size, stored)
		if err != nil {
			fail("%v", err)
		}
		if got != root {
			fail("root mismatch: entries hash to %v, checkpoint says %v", got, root)
		}
		fmt.Printf("OK %s %d %s\n", origin, size, root)
	case "inclusion":
		var doc struct {
			LeafIndex     int64    `json:"leaf_index"`
			TreeSize      int64    `json:"tree_size"`
			InclusionPath []string `json:"inclusion_path"`
			Entry         string   `json:"entry"`
			Checkpoint    string   `json:"checkpoint"`
		}
		if err := json.Unmarshal(read(os.Args[3]), &doc); err != nil {
			fail("%v", err)
		}
		_, size, root := open(string(read(os.Args[2])), []byte(doc.Checkpoint))
		if size != doc.TreeSize {
			fail("size mismatch")
		}
		proof := tlog.RecordProof(hashes(doc.InclusionPath))
		if err := tlog.CheckRecord(proof, size, root, doc.LeafIndex, tlog.RecordHash([]byte(doc.Entry))); err != nil {
			fail("inclusion: %v", err)
		}
		fmt.Printf("OK inclusion %d in %d\n", doc.LeafIndex, size)
	case "consistency":
		var doc struct {
			Path          []string `json:"consistency_path"`
			OldCheckpoint string   `json:"old_checkpoint"`
			Checkpoint    string   `json:"checkpoint"`
		}
		if err := json.Unmarshal(read(os.Args[3]), &doc); err != nil {
			fail("%v", err)
		}
		vkey := string(read(os.Args[2]))
		_, oldSize, oldRoot := open(vkey, []byte(doc.OldCheckpoint))
		_, newSize, newRoot := open(vkey, []byte(doc.Checkpoint))
		proof := tlog.TreeProof(hashes(doc.Path))
		if err := tlog.CheckTree(proof, newSize, newRoot, oldSize, oldRoot); err != nil {
			fail("consistency: %v", err)
		}
		fmt.Printf("OK consistency %d -> %d\n", oldSize, newSize)
	default:
		fail("unknown command %q", os.Args[1])
	}
}
