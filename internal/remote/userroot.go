package remote

// UserRootDir is where a login user who cannot become root keeps the GC
// roots deployctl makes for it on a target, in its home. They are
// indirect roots: links in the user's own directory that Nix's daemon
// registers under gcroots/auto.
const UserRootDir = "~/.local/state/deployctl"

// userRootScript realises $1 and makes $2 in UserRootDir an indirect root
// of its output, replacing the link atomically; further arguments go to
// nix-store --realise. (Nix 2.3 needs --indirect; later Nix and Lix take
// it and ignore it.)
const userRootScript = `d="$HOME/.local/state/deployctl" && mkdir -p "$d" && p=$1 n=$2 && shift 2 && ` +
	`exec nix-store --realise "$p" --add-root "$d/$n" --indirect "$@" >/dev/null`

// UserRoot is the command, run as the login user, that realises path (a
// store path already valid, or a derivation to build) and keeps it as
// the user's GC root name in UserRootDir.
func UserRoot(path, name string, realiseArgs ...string) Cmd {
	return Cmd{Argv: append([]string{"sh", "-c", userRootScript, "sh", path, name}, realiseArgs...)}
}
