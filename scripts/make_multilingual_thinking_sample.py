"""Write examples/data/multilingual_thinking_sample.jsonl: 40 rows shaped like HuggingFaceH4/Multilingual-Thinking.

Re-run from the repository root (standard library only; the output is byte-identical on every run):

    python scripts/make_multilingual_thinking_sample.py            # rewrites the sample in place
    python scripts/make_multilingual_thinking_sample.py --check    # exit 1 if the file is out of date
    python scripts/make_multilingual_thinking_sample.py -o OUT     # write somewhere else

Each row has the columns of the public dataset:

    reasoning_language  "English" | "French" | "German" | "Spanish" | "Italian"
    developer           a short persona instruction (English)
    user                the question, in English or one of the other four languages
    analysis            the assistant's reasoning, 1-3 sentences, written in reasoning_language
    final               the answer, in the language of the question
    messages            [system "reasoning language: <reasoning_language>\\n\\n<developer>",
                         user <user>, assistant content=<final> thinking=<analysis>],
                        each message with a "thinking" key (null except for the assistant)

The tasks are small and checkable (arithmetic, hours to minutes, capital cities, counting a letter,
weekdays, rectangle areas, percentages, averages). Every number in a row is computed here, so the
reasoning and the answer always agree. Row i uses task i mod 8 and reasoning language i mod 5, so
every pairing of task and reasoning language occurs exactly once; the language of the question is
drawn from a seeded generator (English about 40% of the time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SEED = 8_2025
N_ROWS = 40
OUTPUT = Path(__file__).resolve().parents[1] / "examples" / "data" / "multilingual_thinking_sample.jsonl"

LANGUAGES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian"}
REASONING_ORDER = ["en", "fr", "de", "es", "it"]
AND = {"en": "and", "fr": "et", "de": "und", "es": "y", "it": "e"}

WEEKDAYS = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
    "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
    "es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
    "it": ["lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"],
}

# (the phrase "of <country>" as it follows "the capital", the capital's name), per language.
COUNTRIES = [
    {
        "en": ("of France", "Paris"),
        "fr": ("de la France", "Paris"),
        "de": ("von Frankreich", "Paris"),
        "es": ("de Francia", "París"),
        "it": ("della Francia", "Parigi"),
    },
    {
        "en": ("of Germany", "Berlin"),
        "fr": ("de l'Allemagne", "Berlin"),
        "de": ("von Deutschland", "Berlin"),
        "es": ("de Alemania", "Berlín"),
        "it": ("della Germania", "Berlino"),
    },
    {
        "en": ("of Japan", "Tokyo"),
        "fr": ("du Japon", "Tokyo"),
        "de": ("von Japan", "Tokio"),
        "es": ("de Japón", "Tokio"),
        "it": ("del Giappone", "Tokyo"),
    },
    {
        "en": ("of Portugal", "Lisbon"),
        "fr": ("du Portugal", "Lisbonne"),
        "de": ("von Portugal", "Lissabon"),
        "es": ("de Portugal", "Lisboa"),
        "it": ("del Portogallo", "Lisbona"),
    },
    {
        "en": ("of Canada", "Ottawa"),
        "fr": ("du Canada", "Ottawa"),
        "de": ("von Kanada", "Ottawa"),
        "es": ("de Canadá", "Ottawa"),
        "it": ("del Canada", "Ottawa"),
    },
    {
        "en": ("of Austria", "Vienna"),
        "fr": ("de l'Autriche", "Vienne"),
        "de": ("von Österreich", "Wien"),
        "es": ("de Austria", "Viena"),
        "it": ("dell'Austria", "Vienna"),
    },
    {
        "en": ("of Poland", "Warsaw"),
        "fr": ("de la Pologne", "Varsovie"),
        "de": ("von Polen", "Warschau"),
        "es": ("de Polonia", "Varsovia"),
        "it": ("della Polonia", "Varsavia"),
    },
    {
        "en": ("of Norway", "Oslo"),
        "fr": ("de la Norvège", "Oslo"),
        "de": ("von Norwegen", "Oslo"),
        "es": ("de Noruega", "Oslo"),
        "it": ("della Norvegia", "Oslo"),
    },
    {
        "en": ("of Australia", "Canberra"),
        "fr": ("de l'Australie", "Canberra"),
        "de": ("von Australien", "Canberra"),
        "es": ("de Australia", "Canberra"),
        "it": ("dell'Australia", "Canberra"),
    },
]

# (letter, word) pairs for the letter-counting task, in the language of the question; every letter occurs 2+ times.
SPELLING = {
    "en": [("r", "strawberry"), ("s", "mississippi"), ("e", "bookkeeper"), ("a", "banana"), ("p", "pepper")],
    "fr": [("n", "anticonstitutionnellement"), ("e", "pamplemousse"), ("s", "chaussette"), ("l", "parallèle")],
    "de": [("e", "Erdbeere"), ("f", "Schifffahrt"), ("n", "Nonne"), ("t", "Kartoffelsalat")],
    "es": [("r", "ferrocarril"), ("e", "excelente"), ("c", "cocinero"), ("o", "ocho")],
    "it": [("p", "pappagallo"), ("e", "precipitevolissimevolmente"), ("t", "tartaruga"), ("s", "sussurrare")],
}

# Per task: question, analysis and final templates per language, and two developer personas.
TEXTS: dict[str, dict[str, dict[str, str]]] = {
    "arithmetic": {
        "question": {
            "en": "What is {a} {op} {b}?",
            "fr": "Combien font {a} {op} {b} ?",
            "de": "Was ist {a} {op} {b}?",
            "es": "¿Cuánto es {a} {op} {b}?",
            "it": "Quanto fa {a} {op} {b}?",
        },
        "analysis": {
            "en": "The user wants {a} {op} {b}. Working it out in steps: {steps}. The answer is {result}.",
            "fr": "L'utilisateur veut calculer {a} {op} {b}. Je décompose : {steps}. Le résultat est {result}.",
            "de": "Der Nutzer möchte {a} {op} {b} wissen. Schrittweise: {steps}. Das Ergebnis ist {result}.",
            "es": "El usuario quiere calcular {a} {op} {b}. Paso a paso: {steps}. El resultado es {result}.",
            "it": "L'utente vuole calcolare {a} {op} {b}. Passo dopo passo: {steps}. Il risultato è {result}.",
        },
        "final": {
            "en": "{a} {op} {b} equals {result}.",
            "fr": "{a} {op} {b} font {result}.",
            "de": "{a} {op} {b} ergibt {result}.",
            "es": "{a} {op} {b} es igual a {result}.",
            "it": "{a} {op} {b} fa {result}.",
        },
    },
    "minutes": {
        "question": {
            "en": "How many minutes are there in {h} hours and {m} minutes?",
            "fr": "Combien de minutes y a-t-il dans {h} heures et {m} minutes ?",
            "de": "Wie viele Minuten sind {h} Stunden und {m} Minuten?",
            "es": "¿Cuántos minutos hay en {h} horas y {m} minutos?",
            "it": "Quanti minuti ci sono in {h} ore e {m} minuti?",
        },
        "analysis": {
            "en": "An hour has 60 minutes, so {h} hours are {h} × 60 = {hm} minutes. Adding {m} minutes gives {total}.",
            "fr": "Une heure compte 60 minutes, donc {h} heures font {h} × 60 = {hm} minutes. "
            "En ajoutant {m} minutes, on obtient {total}.",
            "de": "Eine Stunde hat 60 Minuten, also sind {h} Stunden {h} × 60 = {hm} Minuten. "
            "Dazu kommen {m} Minuten, das ergibt {total}.",
            "es": "Una hora tiene 60 minutos, así que {h} horas son {h} × 60 = {hm} minutos. "
            "Sumando {m} minutos se obtienen {total}.",
            "it": "Un'ora ha 60 minuti, quindi {h} ore sono {h} × 60 = {hm} minuti. "
            "Aggiungendo {m} minuti si ottiene {total}.",
        },
        "final": {
            "en": "That is {total} minutes.",
            "fr": "Cela fait {total} minutes.",
            "de": "Das sind {total} Minuten.",
            "es": "Son {total} minutos.",
            "it": "Sono {total} minuti.",
        },
    },
    "capital": {
        "question": {
            "en": "What is the capital {of}?",
            "fr": "Quelle est la capitale {of} ?",
            "de": "Was ist die Hauptstadt {of}?",
            "es": "¿Cuál es la capital {of}?",
            "it": "Qual è la capitale {of}?",
        },
        "analysis": {
            "en": "The user is asking for the capital {of}. That is {capital}, so I answer with it.",
            "fr": "L'utilisateur demande la capitale {of}. C'est {capital}, je réponds donc {capital}.",
            "de": "Der Nutzer fragt nach der Hauptstadt {of}. Das ist {capital}, also antworte ich damit.",
            "es": "El usuario pregunta por la capital {of}. Es {capital}, así que respondo eso.",
            "it": "L'utente chiede la capitale {of}. È {capital}, quindi rispondo così.",
        },
        "final": {
            "en": "The capital {of} is {capital}.",
            "fr": "La capitale {of} est {capital}.",
            "de": "Die Hauptstadt {of} ist {capital}.",
            "es": "La capital {of} es {capital}.",
            "it": "La capitale {of} è {capital}.",
        },
    },
    "letters": {
        "question": {
            "en": 'How many times does the letter "{letter}" appear in the word "{word}"?',
            "fr": "Combien de fois la lettre « {letter} » apparaît-elle dans le mot « {word} » ?",
            "de": "Wie oft kommt der Buchstabe „{letter}“ im Wort „{word}“ vor?",
            "es": "¿Cuántas veces aparece la letra «{letter}» en la palabra «{word}»?",
            "it": "Quante volte compare la lettera «{letter}» nella parola «{word}»?",
        },
        "analysis": {
            "en": 'I spell out "{word}" and look for "{letter}": it is at positions {positions}. That makes {count}.',
            "fr": "J'épelle « {word} » en cherchant « {letter} » : elle est aux positions {positions}. "
            "Cela fait {count}.",
            "de": "Ich buchstabiere „{word}“ und suche „{letter}“: Er steht an den Positionen {positions}. "
            "Das sind {count}.",
            "es": "Deletreo «{word}» buscando la «{letter}»: está en las posiciones {positions}. Son {count}.",
            "it": "Scompongo «{word}» cercando la «{letter}»: è nelle posizioni {positions}. Sono {count}.",
        },
        "final": {
            "en": 'The letter "{letter}" appears {count} times in "{word}".',
            "fr": "La lettre « {letter} » apparaît {count} fois dans « {word} ».",
            "de": "Der Buchstabe „{letter}“ kommt {count}-mal in „{word}“ vor.",
            "es": "La letra «{letter}» aparece {count} veces en «{word}».",
            "it": "La lettera «{letter}» compare {count} volte in «{word}».",
        },
    },
    "weekday": {
        "question": {
            "en": "Today is {start}. What day of the week will it be in {n} days?",
            "fr": "Nous sommes {start}. Quel jour de la semaine serons-nous dans {n} jours ?",
            "de": "Heute ist {start}. Welcher Wochentag ist in {n} Tagen?",
            "es": "Hoy es {start}. ¿Qué día de la semana será dentro de {n} días?",
            "it": "Oggi è {start}. Che giorno della settimana sarà tra {n} giorni?",
        },
        "analysis": {
            "en": "{n} = 7 × {weeks} + {rest}, and whole weeks do not change the weekday. "
            "Only the remainder {rest} matters: {start} plus {rest} is {end}.",
            "fr": "{n} = 7 × {weeks} + {rest}, et les semaines entières ne changent pas le jour. "
            "Seul le reste {rest} compte : {start} plus {rest} donne {end}.",
            "de": "{n} = 7 × {weeks} + {rest}, und volle Wochen ändern den Wochentag nicht. "
            "Nur der Rest {rest} zählt: {start} plus {rest} ergibt {end}.",
            "es": "{n} = 7 × {weeks} + {rest}, y las semanas completas no cambian el día. "
            "Solo cuenta el resto {rest}: {start} más {rest} da {end}.",
            "it": "{n} = 7 × {weeks} + {rest}, e le settimane intere non cambiano il giorno. "
            "Conta solo il resto {rest}: {start} più {rest} dà {end}.",
        },
        "final": {
            "en": "In {n} days it will be {end}.",
            "fr": "Dans {n} jours, nous serons {end}.",
            "de": "In {n} Tagen ist {end}.",
            "es": "Dentro de {n} días será {end}.",
            "it": "Tra {n} giorni sarà {end}.",
        },
    },
    "rectangle": {
        "question": {
            "en": "A rectangle is {length} m long and {width} m wide. What is its area?",
            "fr": "Un rectangle mesure {length} m de long et {width} m de large. Quelle est son aire ?",
            "de": "Ein Rechteck ist {length} m lang und {width} m breit. Wie groß ist seine Fläche?",
            "es": "Un rectángulo mide {length} m de largo y {width} m de ancho. ¿Cuál es su área?",
            "it": "Un rettangolo è lungo {length} m e largo {width} m. Qual è la sua area?",
        },
        "analysis": {
            "en": "The area of a rectangle is length times width: {length} × {width} = {area}. "
            "The unit is square metres.",
            "fr": "L'aire d'un rectangle est la longueur multipliée par la largeur : {length} × {width} = {area}. "
            "L'unité est le mètre carré.",
            "de": "Die Fläche eines Rechtecks ist Länge mal Breite: {length} × {width} = {area}. "
            "Die Einheit ist Quadratmeter.",
            "es": "El área de un rectángulo es el largo por el ancho: {length} × {width} = {area}. "
            "La unidad es el metro cuadrado.",
            "it": "L'area di un rettangolo è la lunghezza per la larghezza: {length} × {width} = {area}. "
            "L'unità è il metro quadrato.",
        },
        "final": {
            "en": "Its area is {area} m².",
            "fr": "Son aire est de {area} m².",
            "de": "Die Fläche beträgt {area} m².",
            "es": "Su área es de {area} m².",
            "it": "La sua area è di {area} m².",
        },
    },
    "percent": {
        "question": {
            "en": "What is {p}% of {n}?",
            "fr": "Combien font {p} % de {n} ?",
            "de": "Wie viel sind {p} % von {n}?",
            "es": "¿Cuánto es el {p} % de {n}?",
            "it": "Quanto fa il {p}% di {n}?",
        },
        "analysis": {
            "en": "{p}% means {p}/100, so I compute {n} × {p} / 100 = {result}.",
            "fr": "{p} % signifie {p}/100, donc je calcule {n} × {p} / 100 = {result}.",
            "de": "{p} % bedeutet {p}/100, also rechne ich {n} × {p} / 100 = {result}.",
            "es": "El {p} % significa {p}/100, así que calculo {n} × {p} / 100 = {result}.",
            "it": "Il {p}% significa {p}/100, quindi calcolo {n} × {p} / 100 = {result}.",
        },
        "final": {
            "en": "{p}% of {n} is {result}.",
            "fr": "{p} % de {n} font {result}.",
            "de": "{p} % von {n} sind {result}.",
            "es": "El {p} % de {n} es {result}.",
            "it": "Il {p}% di {n} è {result}.",
        },
    },
    "average": {
        "question": {
            "en": "What is the average of {numbers}?",
            "fr": "Quelle est la moyenne de {numbers} ?",
            "de": "Was ist der Durchschnitt von {numbers}?",
            "es": "¿Cuál es la media de {numbers}?",
            "it": "Qual è la media di {numbers}?",
        },
        "analysis": {
            "en": "The sum is {sum_expr} = {total}. There are {count} numbers, so the average is {total} / {count} = {mean}.",
            "fr": "La somme vaut {sum_expr} = {total}. Il y a {count} nombres, "
            "donc la moyenne est {total} / {count} = {mean}.",
            "de": "Die Summe ist {sum_expr} = {total}. Es sind {count} Zahlen, "
            "also ist der Durchschnitt {total} / {count} = {mean}.",
            "es": "La suma es {sum_expr} = {total}. Hay {count} números, así que la media es {total} / {count} = {mean}.",
            "it": "La somma è {sum_expr} = {total}. Ci sono {count} numeri, quindi la media è {total} / {count} = {mean}.",
        },
        "final": {
            "en": "The average is {mean}.",
            "fr": "La moyenne est {mean}.",
            "de": "Der Durchschnitt ist {mean}.",
            "es": "La media es {mean}.",
            "it": "La media è {mean}.",
        },
    },
}

DEVELOPERS = {
    "arithmetic": ["You are a patient math tutor.", "You are a calculator assistant. Keep answers to one sentence."],
    "minutes": ["You are a helpful time-management coach.", "You are a precise assistant who checks every step."],
    "capital": ["You are a friendly geography teacher.", "You are a travel guide who enjoys sharing facts."],
    "letters": ["You are a spelling coach for children.", "You are a meticulous proofreader."],
    "weekday": ["You are a calendar assistant.", "You are a cheerful scheduling helper."],
    "rectangle": ["You are a geometry tutor.", "You are a home-renovation assistant who helps with measurements."],
    "percent": ["You are a personal finance helper.", "You are a patient math tutor."],
    "average": ["You are a statistics tutor.", "You are a data assistant who keeps answers brief."],
}

TASK_ORDER = list(TEXTS)

# A task draws its numbers once (language-neutral) and then fills in per-language words.
Values = dict[str, object]


def join_list(items: list[object], lang: str) -> str:
    """'4, 8 and 12' with the language's word for 'and'."""
    words = [str(x) for x in items]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {AND[lang]} {words[-1]}"


def draw_arithmetic(rng: random.Random, k: int) -> Values:
    op = ["+", "-", "×", "+", "×"][k % 5]
    if op == "×":
        a, b = rng.randint(12, 49), rng.randint(11, 29)
        tens, units = b - b % 10, b % 10
        steps = f"{a} × {tens} = {a * tens}, {a} × {units} = {a * units}, {a * tens} + {a * units} = {a * b}"
        result = a * b
    else:
        a, b = rng.randint(40, 99), rng.randint(12, 39)
        if b % 10 == 0:
            b += 3
        tens, units = b - b % 10, b % 10
        sign = 1 if op == "+" else -1
        mid = a + sign * tens
        result = a + sign * b
        steps = f"{a} {op} {tens} = {mid}, {mid} {op} {units} = {result}"
    return {"a": a, "b": b, "op": op, "steps": steps, "result": result}


def draw_minutes(rng: random.Random, k: int) -> Values:
    h, m = rng.randint(2, 9), 5 * rng.randint(1, 11)
    return {"h": h, "m": m, "hm": h * 60, "total": h * 60 + m}


def draw_capital(rng: random.Random, k: int) -> Values:
    return {"country": k}  # index into a per-run shuffle of COUNTRIES, see build_rows


def draw_letters(rng: random.Random, k: int) -> Values:
    return {"pick": k}  # the word depends on the question's language (see localize); k keeps repeats rare


def draw_weekday(rng: random.Random, k: int) -> Values:
    n = rng.choice([x for x in range(8, 41) if x % 7])
    start = rng.randrange(7)
    return {"n": n, "weeks": n // 7, "rest": n % 7, "start_i": start, "end_i": (start + n) % 7}


def draw_rectangle(rng: random.Random, k: int) -> Values:
    length, width = rng.randint(6, 19), rng.randint(3, 12)
    if width >= length:
        length, width = width + 2, length
    return {"length": length, "width": width, "area": length * width}


def draw_percent(rng: random.Random, k: int) -> Values:
    p = rng.choice([5, 10, 15, 20, 25, 30, 40, 75])
    n = rng.choice([x for x in range(40, 801, 20) if x * p % 100 == 0])
    return {"p": p, "n": n, "result": n * p // 100}


def draw_average(rng: random.Random, k: int) -> Values:
    count = rng.choice([3, 4, 5])
    while True:
        numbers = [rng.randint(2, 60) for _ in range(count)]
        if sum(numbers) % count == 0 and len(set(numbers)) == count:
            break
    total = sum(numbers)
    return {"numbers_list": numbers, "total": total, "count": count, "mean": total // count}


DRAW: dict[str, Callable[[random.Random, int], Values]] = {
    "arithmetic": draw_arithmetic,
    "minutes": draw_minutes,
    "capital": draw_capital,
    "letters": draw_letters,
    "weekday": draw_weekday,
    "rectangle": draw_rectangle,
    "percent": draw_percent,
    "average": draw_average,
}


def localize(task: str, values: Values, lang: str, question_lang: str, countries: list[dict]) -> dict[str, object]:
    """Template fields for one language; words that belong to the question (the spelled word) stay in its language."""
    fields = dict(values)
    if task == "capital":
        fields["of"], fields["capital"] = countries[int(values["country"])][lang]
    elif task == "letters":
        options = SPELLING[question_lang]
        letter, word = options[int(values["pick"]) % len(options)]
        positions = [i + 1 for i, ch in enumerate(word.lower()) if ch == letter]
        fields.update(letter=letter, word=word, count=len(positions), positions=join_list(positions, lang))
    elif task == "weekday":
        fields["start"] = WEEKDAYS[lang][int(values["start_i"])]
        fields["end"] = WEEKDAYS[lang][int(values["end_i"])]
    elif task == "average":
        numbers = list(values["numbers_list"])
        fields["numbers"] = join_list(numbers, lang)
        fields["sum_expr"] = " + ".join(str(x) for x in numbers)
    return fields


def build_rows() -> list[dict]:
    rng = random.Random(SEED)
    countries = COUNTRIES[:]
    rng.shuffle(countries)
    seen: dict[str, int] = {}
    rows = []
    for i in range(N_ROWS):
        task = TASK_ORDER[i % len(TASK_ORDER)]
        k = seen[task] = seen.get(task, -1) + 1
        reasoning = REASONING_ORDER[i % len(REASONING_ORDER)]
        question_lang = "en" if rng.random() < 0.4 else rng.choice(["fr", "de", "es", "it"])
        values = DRAW[task](rng, k)
        texts = TEXTS[task]
        in_question = localize(task, values, question_lang, question_lang, countries)
        in_reasoning = localize(task, values, reasoning, question_lang, countries)
        developer = DEVELOPERS[task][rng.randrange(2)]
        user = texts["question"][question_lang].format(**in_question)
        analysis = texts["analysis"][reasoning].format(**in_reasoning)
        final = texts["final"][question_lang].format(**in_question)
        language = LANGUAGES[reasoning]
        rows.append(
            {
                "reasoning_language": language,
                "developer": developer,
                "user": user,
                "analysis": analysis,
                "final": final,
                "messages": [
                    {"role": "system", "content": f"reasoning language: {language}\n\n{developer}", "thinking": None},
                    {"role": "user", "content": user, "thinking": None},
                    {"role": "assistant", "content": final, "thinking": analysis},
                ],
            }
        )
    check_rows(rows)
    return rows


def check_rows(rows: list[dict]) -> None:
    """Fail loudly on an empty or inconsistent row (the templates are easy to break when edited)."""
    assert len(rows) == N_ROWS, len(rows)
    for n, row in enumerate(rows):
        for column in ("reasoning_language", "developer", "user", "analysis", "final"):
            value = row[column]
            assert isinstance(value, str) and value.strip() and "{" not in value, (n, column, value)
        system, user, assistant = row["messages"]
        assert system["content"] == f"reasoning language: {row['reasoning_language']}\n\n{row['developer']}", n
        assert (user["content"], assistant["content"], assistant["thinking"]) == (
            row["user"],
            row["final"],
            row["analysis"],
        ), n
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"], n
        assert system["thinking"] is None and user["thinking"] is None, n


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; this is an ordinary repository file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help=f"where to write (default: {OUTPUT})")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = render(build_rows())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else None
        if current != text:
            print(f"{args.output} is out of date; re-run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    write_atomically(args.output, text)
    print(f"wrote {N_ROWS} rows to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
