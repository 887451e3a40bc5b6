#!/bin/sh
# Start a PulseAudio daemon with a virtual sink "virt" and make its monitor the default
# source, so PortAudio's "pulse" device records whatever `paplay --device=virt` plays.
# No sound hardware needed. Idempotent: reuses a running daemon.
#
# Needs (Debian/Ubuntu): apt-get install pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins
# As root, pulseaudio prints "This program is not intended to be run as root" and runs anyway
# in per-user mode with -D; that is what CI uses (no --system, which would need a pulse user
# and client access rules).
set -eu

if ! pactl info >/dev/null 2>&1; then
    pulseaudio -D --exit-idle-time=-1 -n \
        --load="module-null-sink sink_name=virt" \
        --load=module-native-protocol-unix 2>/dev/null || true
    i=0
    until pactl info >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 50 ]; then
            echo "start_pulse.sh: PulseAudio did not start" >&2
            exit 1
        fi
        sleep 0.1
    done
fi
pactl list short sinks | grep -q '^[0-9]*[[:space:]]virt[[:space:]]' || \
    pactl load-module module-null-sink sink_name=virt >/dev/null
pactl set-default-sink virt
pactl set-default-source virt.monitor
echo "start_pulse.sh: PulseAudio ready ($(pactl info | sed -n 's/^Server String: //p')), default source virt.monitor"
