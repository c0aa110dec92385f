"""Shell completion: the scripts ``musicbuild completion bash|zsh|fish`` prints, and the answers
to the hidden ``musicbuild __complete WORD...`` they run on every TAB.

The scripts hold no knowledge of their own: they pass the words typed so far (the last one may be
empty) and show what comes back, one candidate per line as ``value<TAB>description``; a single
line ``@files`` asks the shell to complete file names. Commands, options and choices come from the
argparse parser, track ids and ``label:NAME`` from the manifest (``-f`` if typed, else
./musicbuild.yaml), so completion always matches the installed musicbuild and the manifest.
"""
from __future__ import annotations

import argparse
from pathlib import Path

FILES = "@files"
FILE_OPTIONS = {"-f", "--file", "--report", "--junit", "--html"}


def complete(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """Candidates for the last of ``words`` (everything after ``musicbuild``). Never raises."""
    try:
        return _complete(parser, words or [""])
    except Exception:  # a TAB must never print a traceback into the user's prompt
        return []


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _complete(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    *done, cur = words
    commands = _subcommands(parser)
    command: str | None = None
    manifest = "musicbuild.yaml"
    current = parser
    skip = False
    for i, word in enumerate(done):
        if skip:
            skip = False
            continue
        name, eq, value = word.partition("=")
        action = _options(current).get(name)
        if name in ("-f", "--file"):
            if eq:
                manifest = value
            elif i + 1 < len(done):
                manifest = done[i + 1]
        if action is not None:
            skip = action.nargs != 0 and not eq and action.nargs != "?"
        elif command is None and word in commands:
            command, current = word, commands[word][0]
    prev = _options(current).get(done[-1]) if done else None
    if prev is not None and prev.nargs != 0 and prev.nargs != "?":  # the value of an option
        if set(prev.option_strings) & FILE_OPTIONS:
            return [FILES]
        return [str(c) for c in prev.choices or () if str(c).startswith(cur)]
    if cur.startswith("-"):
        return [f"{s}\t{a.help or ''}".rstrip("\t") for s, a in _options(current).items()
                if s.startswith(cur) and a.help != argparse.SUPPRESS]
    if command is None:
        return [f"{name}\t{help}" for name, (_, help) in commands.items() if name.startswith(cur)]
    positional = [a for a in current._actions if not a.option_strings]
    if any(a.dest == "targets" for a in positional):
        from .api import targets

        return [t for t in targets(Path(manifest)) if t.startswith(cur)]
    return [str(c) for a in positional for c in a.choices or () if str(c).startswith(cur)]


BASH = r"""# bash completion for musicbuild: source <(musicbuild completion bash)
_musicbuild() {
    local line=${COMP_LINE:0:COMP_POINT} IFS=$' \t\n'
    local -a words
    read -ra words <<< "$line"
    [[ $line == *[[:space:]] ]] && words+=("")
    local cur=${words[${#words[@]}-1]} out
    out=$("${COMP_WORDS[0]}" __complete "${words[@]:1}" 2>/dev/null) || return 0
    if [[ $out == @files ]]; then
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        return 0
    fi
    # bash splits words at ':' (label:NAME); offer only the part after the last one
    local prefix=""
    [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]] && prefix=${cur%"${cur##*:}"}
    COMPREPLY=()
    local c
    while IFS= read -r c; do
        [[ -n $c ]] && COMPREPLY+=("${c%%$'\t'*}")
    done <<< "$out"
    COMPREPLY=("${COMPREPLY[@]#"$prefix"}")
}
complete -F _musicbuild musicbuild
"""

ZSH = r"""#compdef musicbuild
# zsh completion for musicbuild: source <(musicbuild completion zsh) after compinit, or save it
# as _musicbuild in a folder of your $fpath.
_musicbuild() {
    local -a lines described
    local line value desc
    lines=("${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    if [[ ${lines[1]} == @files ]]; then
        _files
        return
    fi
    for line in "${lines[@]}"; do
        [[ -n $line ]] || continue
        value=${line%%$'\t'*}
        desc=""
        [[ $line == *$'\t'* ]] && desc=${line#*$'\t'}
        described+=("${value//:/\\:}${desc:+:$desc}")
    done
    _describe -t musicbuild musicbuild described
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _musicbuild "$@"
else
    compdef _musicbuild musicbuild
fi
"""

FISH = r"""# fish completion for musicbuild: musicbuild completion fish > ~/.config/fish/completions/musicbuild.fish
function __musicbuild_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    command -q $tokens[1]; or return
    set -l out (command $tokens[1] __complete $tokens[2..-1] "$cur" 2>/dev/null)
    if test "$out[1]" = "@files"
        __fish_complete_path "$cur"
        return
    end
    printf '%s\n' $out
end
complete -c musicbuild -f -a '(__musicbuild_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


def script(shell: str) -> str:
    return SCRIPTS[shell]
