"""A machine whose 'CPU' counts a word of RAM down, then powers off.

``-M countdown,start=N,exit=S`` counts from N and exits with status S;
``halt=on`` makes the CPU halt at once and a guest timer power off after
``delay_ms``; ``crash=on`` makes the CPU raise an unexpected exception.
"""
from vmforge.config import MachineProp
from vmforge.machine import Machine

COUNTER = 0x1000


class Countdown(Machine):
    name = "countdown"
    description = "a test machine with a fake CPU"
    max_cpus = 2
    properties = {
        "start": MachineProp(int, 10, "the count's first value", min=0),
        "exit": MachineProp(int, 0, "the exit status", min=0, max=255),
        "halt": MachineProp(bool, False, "halt at once; a timer powers off"),
        "delay_ms": MachineProp(int, 50, "the timer's delay (ms)", min=0),
        "crash": MachineProp(bool, False, "the CPU raises RuntimeError (a bug in vmforge)"),
    }

    def build(self):
        props = self.config.machine_props
        self.start = int(props.get("start", "10"))
        self.status = int(props.get("exit", "0"))
        self.halt = self.properties["halt"].parse(props.get("halt", "off"))
        self.add_ram(COUNTER, 0x1000)
        if self.halt:
            timer = self.timers.timer(lambda: self.request_shutdown(
                "poweroff" if self.status == 0 else "fail", self.status))
            timer.arm(int(props.get("delay_ms", "50")) * 1_000_000)

    def reset_cpus(self):
        self.space.write(COUNTER, 8, self.start)

    def run_cpus(self):
        if self.properties["crash"].parse(self.config.machine_props.get("crash", "off")):
            raise RuntimeError("the fake CPU crashed\non two lines")
        if self.halt:
            return True
        left = self.space.read(COUNTER, 8)
        if left == 0:
            self.request_shutdown("poweroff" if self.status == 0 else "fail", self.status)
        else:
            self.space.write(COUNTER, 8, left - 1)
        return False
