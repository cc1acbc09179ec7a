"""Build the multilingual sample chat dataset used by the quickstart.

Writes examples/data/chat_multilingual.jsonl: 240 short multi-turn
conversations in six languages (en, fr, de, es, it, pt), 40 rows each.
Each row looks like

    {"messages": [...], "language": "fr"}

where the messages use the chat format with roles "developer", "user" and
"assistant", and every assistant message also carries a "thinking" string.

Re-run from the repository root with:

    python scripts/make_sample_data.py

The output is byte-identical on every run (fixed seed, standard library
only), so a diff of the jsonl after a re-run should always be empty unless
this script changed.

Choices worth knowing about:
  * The tasks are tiny (arithmetic, unit conversions, capital cities,
    counting letters, reversing words, comparing numbers, days of the week)
    and every answer is computed here, so answers are always correct and
    agree with the reasoning.
  * The phrasing is deliberately templated: the quickstart trains a tiny
    randomly initialised model for a couple of minutes on CPU, and regular
    data is what lets its loss drop visibly in that time.
  * "thinking" is always English, as gpt-oss reasons in English whatever
    the conversation language; the user turns and the assistant's final
    answers are in the row's language. Developer messages are English too.
  * Portuguese follows Brazilian spelling (Madri, quilômetros).
  * About a third of the rows open with a developer instruction (answer in
    a language, be brief, or end with a summary line), and every assistant
    reply in such a row follows it.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

SEED = 20261122
ROWS_PER_LANGUAGE = 40
OUTPUT = Path(__file__).resolve().parent.parent / "examples" / "data" / "chat_multilingual.jsonl"

LANGS = ["en", "fr", "de", "es", "it", "pt"]
LANG_NAME = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
}

# Every user-visible sentence lives in this one table so that a language is
# added or fixed in one place, and so the templates stay visibly parallel.
P = {
    # arithmetic
    "arith_q": {
        "en": "What is {a} {op} {b}?",
        "fr": "Combien font {a} {op} {b} ?",
        "de": "Was ist {a} {op} {b}?",
        "es": "¿Cuánto es {a} {op} {b}?",
        "it": "Quanto fa {a} {op} {b}?",
        "pt": "Quanto é {a} {op} {b}?",
    },
    "arith_a": {
        "en": "{a} {op} {b} is {r}.",
        "fr": "{a} {op} {b} font {r}.",
        "de": "{a} {op} {b} ist {r}.",
        "es": "{a} {op} {b} es {r}.",
        "it": "{a} {op} {b} fa {r}.",
        "pt": "{a} {op} {b} é {r}.",
    },
    "double_q": {
        "en": "And doubled?",
        "fr": "Et multiplié par deux ?",
        "de": "Und verdoppelt?",
        "es": "¿Y el doble?",
        "it": "E il doppio?",
        "pt": "E o dobro?",
    },
    "double_a": {
        "en": "{p} doubled is {r}.",
        "fr": "{p} multiplié par deux font {r}.",
        "de": "{p} verdoppelt ist {r}.",
        "es": "El doble de {p} es {r}.",
        "it": "Il doppio di {p} è {r}.",
        "pt": "O dobro de {p} é {r}.",
    },
    "plus_q": {
        "en": "And if you add {n}?",
        "fr": "Et si on ajoute {n} ?",
        "de": "Und wenn man {n} addiert?",
        "es": "¿Y si sumas {n}?",
        "it": "E se aggiungi {n}?",
        "pt": "E se somar {n}?",
    },
    "minus_q": {
        "en": "And minus {n}?",
        "fr": "Et moins {n} ?",
        "de": "Und minus {n}?",
        "es": "¿Y menos {n}?",
        "it": "E meno {n}?",
        "pt": "E menos {n}?",
    },
    # unit conversions
    "conv_q": {
        "en": "{hm} are in {x} {frm}?",
        "fr": "{hm} y a-t-il dans {x} {frm} ?",
        "de": "{hm} sind {x} {frm}?",
        "es": "¿{hm} hay en {x} {frm}?",
        "it": "{hm} ci sono in {x} {frm}?",
        "pt": "{hm} há em {x} {frm}?",
    },
    "conv_a": {
        "en": "{x} {frm} is {y} {to}.",
        "fr": "{x} {frm} font {y} {to}.",
        "de": "{x} {frm} sind {y} {to}.",
        "es": "{x} {frm} son {y} {to}.",
        "it": "{x} {frm} sono {y} {to}.",
        "pt": "{x} {frm} são {y} {to}.",
    },
    "conv_more_q": {
        "en": "And {x} {frm}?",
        "fr": "Et {x} {frm} ?",
        "de": "Und {x} {frm}?",
        "es": "¿Y {x} {frm}?",
        "it": "E {x} {frm}?",
        "pt": "E {x} {frm}?",
    },
    "conv_total_q": {
        "en": "And both together?",
        "fr": "Et les deux ensemble ?",
        "de": "Und beide zusammen?",
        "es": "¿Y los dos juntos?",
        "it": "E tutti e due insieme?",
        "pt": "E os dois juntos?",
    },
    "conv_total_a": {
        "en": "Together that makes {t} {to}.",
        "fr": "Ensemble, cela fait {t} {to}.",
        "de": "Zusammen sind das {t} {to}.",
        "es": "Juntos suman {t} {to}.",
        "it": "Insieme fanno {t} {to}.",
        "pt": "Juntos somam {t} {to}.",
    },
    "unit_s": {
        "en": "{y} {to}.",
        "fr": "{y} {to}.",
        "de": "{y} {to}.",
        "es": "{y} {to}.",
        "it": "{y} {to}.",
        "pt": "{y} {to}.",
    },
    # capital cities; fr/it/pt country strings already hold the contracted
    # preposition ("du Japon", "della Spagna", "da França"), the others
    # take it from the template
    "cap_q": {
        "en": "What is the capital of {c}?",
        "fr": "Quelle est la capitale {c} ?",
        "de": "Was ist die Hauptstadt von {c}?",
        "es": "¿Cuál es la capital de {c}?",
        "it": "Qual è la capitale {c}?",
        "pt": "Qual é a capital {c}?",
    },
    "cap_a": {
        "en": "The capital of {c} is {k}.",
        "fr": "La capitale {c} est {k}.",
        "de": "Die Hauptstadt von {c} ist {k}.",
        "es": "La capital de {c} es {k}.",
        "it": "La capitale {c} è {k}.",
        "pt": "A capital {c} é {k}.",
    },
    "cap_next_q": {
        "en": "And of {c}?",
        "fr": "Et {c} ?",
        "de": "Und von {c}?",
        "es": "¿Y de {c}?",
        "it": "E {c}?",
        "pt": "E {c}?",
    },
    "cap_len_q": {
        "en": "How many letters does that city name have?",
        "fr": "Combien de lettres a le nom de cette ville ?",
        "de": "Wie viele Buchstaben hat der Name dieser Stadt?",
        "es": "¿Cuántas letras tiene el nombre de esa ciudad?",
        "it": "Quante lettere ha il nome di quella città?",
        "pt": "Quantas letras tem o nome dessa cidade?",
    },
    "name_len_a": {
        "en": "{k} has {n} letters.",
        "fr": "{k} a {n} lettres.",
        "de": "{k} hat {n} Buchstaben.",
        "es": "{k} tiene {n} letras.",
        "it": "{k} ha {n} lettere.",
        "pt": "{k} tem {n} letras.",
    },
    "letters_s": {
        "en": "{n} letters.",
        "fr": "{n} lettres.",
        "de": "{n} Buchstaben.",
        "es": "{n} letras.",
        "it": "{n} lettere.",
        "pt": "{n} letras.",
    },
    # counting letters in a word
    "count_q": {
        "en": "How many letters are in the word '{w}'?",
        "fr": "Combien de lettres y a-t-il dans le mot '{w}' ?",
        "de": "Wie viele Buchstaben hat das Wort '{w}'?",
        "es": "¿Cuántas letras tiene la palabra '{w}'?",
        "it": "Quante lettere ha la parola '{w}'?",
        "pt": "Quantas letras tem a palavra '{w}'?",
    },
    "count_a": {
        "en": "The word '{w}' has {n} letters.",
        "fr": "Le mot '{w}' a {n} lettres.",
        "de": "Das Wort '{w}' hat {n} Buchstaben.",
        "es": "La palabra '{w}' tiene {n} letras.",
        "it": "La parola '{w}' ha {n} lettere.",
        "pt": "A palavra '{w}' tem {n} letras.",
    },
    "occ_q": {
        "en": "And how many times does the letter '{c}' appear?",
        "fr": "Et combien de fois la lettre '{c}' apparaît-elle ?",
        "de": "Und wie oft kommt der Buchstabe '{c}' vor?",
        "es": "¿Y cuántas veces aparece la letra '{c}'?",
        "it": "E quante volte compare la lettera '{c}'?",
        "pt": "E quantas vezes aparece a letra '{c}'?",
    },
    "occ_a": {
        "en": "The letter '{c}' appears {k} times.",
        "fr": "La lettre '{c}' apparaît {k} fois.",
        "de": "Der Buchstabe '{c}' kommt {k}-mal vor.",
        "es": "La letra '{c}' aparece {k} veces.",
        "it": "La lettera '{c}' compare {k} volte.",
        "pt": "A letra '{c}' aparece {k} vezes.",
    },
    "occ_s": {
        "en": "{k} times.",
        "fr": "{k} fois.",
        "de": "{k}-mal.",
        "es": "{k} veces.",
        "it": "{k} volte.",
        "pt": "{k} vezes.",
    },
    "back_q": {
        "en": "And spelled backwards?",
        "fr": "Et à l'envers ?",
        "de": "Und rückwärts geschrieben?",
        "es": "¿Y escrita al revés?",
        "it": "E scritta al contrario?",
        "pt": "E escrita de trás para frente?",
    },
    "back_a": {
        "en": "Backwards it is '{r}'.",
        "fr": "À l'envers, cela donne '{r}'.",
        "de": "Rückwärts lautet es '{r}'.",
        "es": "Al revés es '{r}'.",
        "it": "Al contrario è '{r}'.",
        "pt": "De trás para frente fica '{r}'.",
    },
    "quoted_s": {
        "en": "'{r}'.",
        "fr": "'{r}'.",
        "de": "'{r}'.",
        "es": "'{r}'.",
        "it": "'{r}'.",
        "pt": "'{r}'.",
    },
    # reversing a word
    "rev_q": {
        "en": "Can you reverse the word '{w}'?",
        "fr": "Peux-tu écrire le mot '{w}' à l'envers ?",
        "de": "Kannst du das Wort '{w}' rückwärts schreiben?",
        "es": "¿Puedes escribir la palabra '{w}' al revés?",
        "it": "Puoi scrivere la parola '{w}' al contrario?",
        "pt": "Você pode escrever a palavra '{w}' de trás para frente?",
    },
    "rev_a": {
        "en": "'{w}' reversed is '{r}'.",
        "fr": "'{w}' à l'envers donne '{r}'.",
        "de": "'{w}' rückwärts ist '{r}'.",
        "es": "'{w}' al revés es '{r}'.",
        "it": "'{w}' al contrario è '{r}'.",
        "pt": "'{w}' de trás para frente é '{r}'.",
    },
    "pal_q": {
        "en": "Is it a palindrome?",
        "fr": "Est-ce un palindrome ?",
        "de": "Ist es ein Palindrom?",
        "es": "¿Es un palíndromo?",
        "it": "È un palindromo?",
        "pt": "É um palíndromo?",
    },
    "pal_yes": {
        "en": "Yes, '{w}' reads the same both ways.",
        "fr": "Oui, '{w}' se lit pareil dans les deux sens.",
        "de": "Ja, '{w}' liest sich in beide Richtungen gleich.",
        "es": "Sí, '{w}' se lee igual en ambos sentidos.",
        "it": "Sì, '{w}' si legge uguale nei due sensi.",
        "pt": "Sim, '{w}' se lê igual nos dois sentidos.",
    },
    "pal_no": {
        "en": "No, '{w}' and '{r}' are different.",
        "fr": "Non, '{w}' et '{r}' sont différents.",
        "de": "Nein, '{w}' und '{r}' sind verschieden.",
        "es": "No, '{w}' y '{r}' son distintas.",
        "it": "No, '{w}' e '{r}' sono diverse.",
        "pt": "Não, '{w}' e '{r}' são diferentes.",
    },
    "yes_s": {"en": "Yes.", "fr": "Oui.", "de": "Ja.", "es": "Sí.", "it": "Sì.", "pt": "Sim."},
    "no_s": {"en": "No.", "fr": "Non.", "de": "Nein.", "es": "No.", "it": "No.", "pt": "Não."},
    "upper_q": {
        "en": "Now write it in capital letters.",
        "fr": "Maintenant en majuscules.",
        "de": "Jetzt in Großbuchstaben.",
        "es": "Ahora en mayúsculas.",
        "it": "Ora in maiuscolo.",
        "pt": "Agora em maiúsculas.",
    },
    "upper_a": {
        "en": "In capital letters: '{r}'.",
        "fr": "En majuscules : '{r}'.",
        "de": "In Großbuchstaben: '{r}'.",
        "es": "En mayúsculas: '{r}'.",
        "it": "In maiuscolo: '{r}'.",
        "pt": "Em maiúsculas: '{r}'.",
    },
    # comparing two numbers
    "cmp_q": {
        "en": "Which is bigger, {a} or {b}?",
        "fr": "Quel est le plus grand, {a} ou {b} ?",
        "de": "Was ist größer, {a} oder {b}?",
        "es": "¿Cuál es mayor, {a} o {b}?",
        "it": "Qual è più grande, {a} o {b}?",
        "pt": "Qual é maior, {a} ou {b}?",
    },
    "cmp_a": {
        "en": "{m} is bigger than {n}.",
        "fr": "{m} est plus grand que {n}.",
        "de": "{m} ist größer als {n}.",
        "es": "{m} es mayor que {n}.",
        "it": "{m} è più grande di {n}.",
        "pt": "{m} é maior que {n}.",
    },
    "diff_q": {
        "en": "By how much?",
        "fr": "De combien ?",
        "de": "Um wie viel?",
        "es": "¿Por cuánto?",
        "it": "Di quanto?",
        "pt": "Por quanto?",
    },
    "diff_a": {
        "en": "By {d}: {m} - {n} = {d}.",
        "fr": "De {d} : {m} - {n} = {d}.",
        "de": "Um {d}: {m} - {n} = {d}.",
        "es": "Por {d}: {m} - {n} = {d}.",
        "it": "Di {d}: {m} - {n} = {d}.",
        "pt": "Por {d}: {m} - {n} = {d}.",
    },
    "sum_q": {
        "en": "And their sum?",
        "fr": "Et leur somme ?",
        "de": "Und ihre Summe?",
        "es": "¿Y su suma?",
        "it": "E la loro somma?",
        "pt": "E a soma deles?",
    },
    "sum_a": {
        "en": "Their sum is {a} + {b} = {s}.",
        "fr": "Leur somme est {a} + {b} = {s}.",
        "de": "Ihre Summe ist {a} + {b} = {s}.",
        "es": "Su suma es {a} + {b} = {s}.",
        "it": "La loro somma è {a} + {b} = {s}.",
        "pt": "A soma é {a} + {b} = {s}.",
    },
    # days of the week
    "day_q": {
        "en": "If today is {d}, what day will it be in {n} days?",
        "fr": "Si on est {d}, quel jour sera-t-on dans {n} jours ?",
        "de": "Wenn heute {d} ist, welcher Tag ist in {n} Tagen?",
        "es": "Si hoy es {d}, ¿qué día será dentro de {n} días?",
        "it": "Se oggi è {d}, che giorno sarà tra {n} giorni?",
        "pt": "Se hoje é {d}, que dia será daqui a {n} dias?",
    },
    "day_a": {
        "en": "In {n} days it will be {d}.",
        "fr": "Dans {n} jours, on sera {d}.",
        "de": "In {n} Tagen ist {d}.",
        "es": "Dentro de {n} días será {d}.",
        "it": "Tra {n} giorni sarà {d}.",
        "pt": "Daqui a {n} dias será {d}.",
    },
    "day_more_q": {
        "en": "And {n} days after that?",
        "fr": "Et {n} jours plus tard ?",
        "de": "Und {n} Tage danach?",
        "es": "¿Y {n} días después?",
        "it": "E {n} giorni dopo?",
        "pt": "E {n} dias depois?",
    },
    "day_more_a": {
        "en": "{n} days later it will be {d}.",
        "fr": "{n} jours plus tard, on sera {d}.",
        "de": "{n} Tage danach ist {d}.",
        "es": "{n} días después será {d}.",
        "it": "{n} giorni dopo sarà {d}.",
        "pt": "{n} dias depois será {d}.",
    },
    "day_total_q": {
        "en": "How many days is that in total?",
        "fr": "Ça fait combien de jours au total ?",
        "de": "Wie viele Tage sind das insgesamt?",
        "es": "¿Cuántos días son en total?",
        "it": "Quanti giorni sono in tutto?",
        "pt": "Quantos dias são no total?",
    },
    "day_total_a": {
        "en": "In total that is {t} days ({n} + {m}).",
        "fr": "Au total, cela fait {t} jours ({n} + {m}).",
        "de": "Insgesamt sind das {t} Tage ({n} + {m}).",
        "es": "En total son {t} días ({n} + {m}).",
        "it": "In tutto sono {t} giorni ({n} + {m}).",
        "pt": "No total são {t} dias ({n} + {m}).",
    },
    "days_s": {
        "en": "{t} days.",
        "fr": "{t} jours.",
        "de": "{t} Tage.",
        "es": "{t} días.",
        "it": "{t} giorni.",
        "pt": "{t} dias.",
    },
    # the summary line demanded by one of the developer instructions
    "summary": {
        "en": "Summary: {s}",
        "fr": "Résumé : {s}",
        "de": "Zusammenfassung: {s}",
        "es": "Resumen: {s}",
        "it": "Riepilogo: {s}",
        "pt": "Resumo: {s}",
    },
}

# unit -> per language: (plural name, "how many <unit>" opener)
UNITS = {
    "km": {
        "en": ("kilometers", "How many kilometers"),
        "fr": ("kilomètres", "Combien de kilomètres"),
        "de": ("Kilometer", "Wie viele Kilometer"),
        "es": ("kilómetros", "Cuántos kilómetros"),
        "it": ("chilometri", "Quanti chilometri"),
        "pt": ("quilômetros", "Quantos quilômetros"),
    },
    "m": {
        "en": ("meters", "How many meters"),
        "fr": ("mètres", "Combien de mètres"),
        "de": ("Meter", "Wie viele Meter"),
        "es": ("metros", "Cuántos metros"),
        "it": ("metri", "Quanti metri"),
        "pt": ("metros", "Quantos metros"),
    },
    "h": {
        "en": ("hours", "How many hours"),
        "fr": ("heures", "Combien d'heures"),
        "de": ("Stunden", "Wie viele Stunden"),
        "es": ("horas", "Cuántas horas"),
        "it": ("ore", "Quante ore"),
        "pt": ("horas", "Quantas horas"),
    },
    "min": {
        "en": ("minutes", "How many minutes"),
        "fr": ("minutes", "Combien de minutes"),
        "de": ("Minuten", "Wie viele Minuten"),
        "es": ("minutos", "Cuántos minutos"),
        "it": ("minuti", "Quanti minuti"),
        "pt": ("minutos", "Quantos minutos"),
    },
}

# (from, to, factor as numerator/denominator); the source amount is always
# chosen so the result is a whole number of at least 2, which keeps every
# unit name plural in every language
CONVERSIONS = [
    ("km", "m", 1000, 1),
    ("m", "km", 1, 1000),
    ("h", "min", 60, 1),
    ("min", "h", 1, 60),
]

# English (country, capital) first, then the localized (country, capital);
# see the note on the capital templates about prepositions
COUNTRIES = [
    {
        "en": ("France", "Paris"),
        "fr": ("de la France", "Paris"),
        "de": ("Frankreich", "Paris"),
        "es": ("Francia", "París"),
        "it": ("della Francia", "Parigi"),
        "pt": ("da França", "Paris"),
    },
    {
        "en": ("Spain", "Madrid"),
        "fr": ("de l'Espagne", "Madrid"),
        "de": ("Spanien", "Madrid"),
        "es": ("España", "Madrid"),
        "it": ("della Spagna", "Madrid"),
        "pt": ("da Espanha", "Madri"),
    },
    {
        "en": ("Italy", "Rome"),
        "fr": ("de l'Italie", "Rome"),
        "de": ("Italien", "Rom"),
        "es": ("Italia", "Roma"),
        "it": ("dell'Italia", "Roma"),
        "pt": ("da Itália", "Roma"),
    },
    {
        "en": ("Germany", "Berlin"),
        "fr": ("de l'Allemagne", "Berlin"),
        "de": ("Deutschland", "Berlin"),
        "es": ("Alemania", "Berlín"),
        "it": ("della Germania", "Berlino"),
        "pt": ("da Alemanha", "Berlim"),
    },
    {
        "en": ("Portugal", "Lisbon"),
        "fr": ("du Portugal", "Lisbonne"),
        "de": ("Portugal", "Lissabon"),
        "es": ("Portugal", "Lisboa"),
        "it": ("del Portogallo", "Lisbona"),
        "pt": ("de Portugal", "Lisboa"),
    },
    {
        "en": ("Japan", "Tokyo"),
        "fr": ("du Japon", "Tokyo"),
        "de": ("Japan", "Tokio"),
        "es": ("Japón", "Tokio"),
        "it": ("del Giappone", "Tokyo"),
        "pt": ("do Japão", "Tóquio"),
    },
    {
        "en": ("Canada", "Ottawa"),
        "fr": ("du Canada", "Ottawa"),
        "de": ("Kanada", "Ottawa"),
        "es": ("Canadá", "Ottawa"),
        "it": ("del Canada", "Ottawa"),
        "pt": ("do Canadá", "Ottawa"),
    },
    {
        "en": ("Austria", "Vienna"),
        "fr": ("de l'Autriche", "Vienne"),
        "de": ("Österreich", "Wien"),
        "es": ("Austria", "Viena"),
        "it": ("dell'Austria", "Vienna"),
        "pt": ("da Áustria", "Viena"),
    },
    {
        "en": ("Greece", "Athens"),
        "fr": ("de la Grèce", "Athènes"),
        "de": ("Griechenland", "Athen"),
        "es": ("Grecia", "Atenas"),
        "it": ("della Grecia", "Atene"),
        "pt": ("da Grécia", "Atenas"),
    },
    {
        "en": ("Norway", "Oslo"),
        "fr": ("de la Norvège", "Oslo"),
        "de": ("Norwegen", "Oslo"),
        "es": ("Noruega", "Oslo"),
        "it": ("della Norvegia", "Oslo"),
        "pt": ("da Noruega", "Oslo"),
    },
]

# Lowercase words that each repeat some letter, so the "how many times does
# the letter appear" follow-up never needs a singular form. German uses
# non-nouns to dodge capitalised nouns turning into odd reversed strings.
WORDS = {
    "en": ["banana", "apple", "window", "letter", "coffee", "bottle", "rabbit", "summer", "pepper", "yellow"],
    "fr": ["banane", "bouteille", "chocolat", "soleil", "poisson", "montagne", "papillon", "pomme", "tomate", "ananas"],
    "de": ["schnell", "gestern", "tanzen", "sprechen", "wunderbar", "zusammen", "immer", "essen", "kommen", "bitte"],
    "es": ["casa", "ventana", "manzana", "perro", "naranja", "montaña", "escuela", "cabeza", "papel", "caballo"],
    "it": [
        "banana",
        "sorella",
        "giardino",
        "cavallo",
        "mattina",
        "farfalla",
        "bottiglia",
        "montagna",
        "pomodoro",
        "candela",
    ],
    "pt": ["banana", "janela", "cidade", "cavalo", "caneta", "laranja", "garrafa", "amarelo", "sapato", "tomate"],
}
# a few real palindromes so that "is it a palindrome?" is not always "no"
PALINDROMES = {
    "en": ["level", "radar"],
    "fr": ["radar", "kayak"],
    "de": ["neben", "stets"],
    "es": ["oso", "reconocer"],
    "it": ["osso", "radar"],
    "pt": ["osso", "radar"],
}

WEEKDAYS = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
    "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
    "es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
    "it": ["lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"],
    "pt": ["segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira", "sábado", "domingo"],
}

# Several phrasings per instruction so the model learns the behaviour rather
# than one exact string; the behaviour itself is identical within a style.
DEVELOPER = {
    "language": ["Always answer in {language}.", "Reply in {language} only."],
    "brief": ["Be brief.", "Keep answers very short: just the result."],
    "summary": ["Always end with a short summary line.", "Finish every answer with a one-line summary."],
}
DEVELOPER_NOTE = {
    "language": "The developer wants {language}, so I answer in {language}.",
    "brief": "The developer wants brevity, so just the result.",
    "summary": "The developer wants a summary line at the end.",
}
STYLES = ["language", "brief", "summary"]


def say(key: str, lang: str, **kw: object) -> str:
    return P[key][lang].format(**kw)


def cap_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def spelled(word: str) -> str:
    return "-".join(word)


def turn(user: str, full: str, short: str, think: str) -> dict:
    return {"user": user, "full": full, "short": short, "think": think}


def gen_arithmetic(rng: random.Random, lang: str, n_turns: int) -> list[dict]:
    kind = rng.choice(["+", "-", "×"])
    if kind == "+":
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        r = a + b
    elif kind == "-":
        a = rng.randint(12, 50)
        b = rng.randint(2, a - 2)
        r = a - b
    else:
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        r = a * b
    turns = [
        turn(
            say("arith_q", lang, a=a, op=kind, b=b),
            say("arith_a", lang, a=a, op=kind, b=b, r=r),
            f"{r}.",
            f"The user asks for {a} {kind} {b}, which is {r}.",
        )
    ]
    # each follow-up only makes sense relative to the running result, which
    # is the point: the model has to carry state across turns
    for _ in range(n_turns - 1):
        p = r
        follow = rng.choice(["double", "plus", "minus"])
        if follow == "double":
            r = p * 2
            turns.append(
                turn(
                    say("double_q", lang),
                    say("double_a", lang, p=p, r=r),
                    f"{r}.",
                    f"The previous result was {p}; doubled that is {r}.",
                )
            )
        elif follow == "plus":
            n = rng.randint(2, 9)
            r = p + n
            turns.append(
                turn(
                    say("plus_q", lang, n=n),
                    say("arith_a", lang, a=p, op="+", b=n, r=r),
                    f"{r}.",
                    f"The previous result was {p}; {p} + {n} = {r}.",
                )
            )
        else:
            n = rng.randint(1, min(9, p - 1))
            r = p - n
            turns.append(
                turn(
                    say("minus_q", lang, n=n),
                    say("arith_a", lang, a=p, op="-", b=n, r=r),
                    f"{r}.",
                    f"The previous result was {p}; {p} - {n} = {r}.",
                )
            )
    return turns


def gen_conversion(rng: random.Random, lang: str, n_turns: int) -> list[dict]:
    frm, to, num, den = rng.choice(CONVERSIONS)
    frm_name, _ = UNITS[frm][lang]
    to_name, how_many = UNITS[to][lang]
    en_frm, en_to = UNITS[frm]["en"][0], UNITS[to]["en"][0]
    rule = {
        ("km", "m"): "1 kilometer is 1000 meters",
        ("m", "km"): "1000 meters make 1 kilometer",
        ("h", "min"): "1 hour is 60 minutes",
        ("min", "h"): "60 minutes make 1 hour",
    }[(frm, to)]

    def amount() -> tuple[int, int]:
        y_or_x = rng.randint(2, 9)
        if den == 1:
            return y_or_x, y_or_x * num
        return y_or_x * den, y_or_x

    x, y = amount()
    turns = [
        turn(
            say("conv_q", lang, hm=how_many, x=x, frm=frm_name),
            say("conv_a", lang, x=x, frm=frm_name, y=y, to=to_name),
            say("unit_s", lang, y=y, to=to_name),
            f"{rule}, so {x} {en_frm} is {y} {en_to}.",
        )
    ]
    if n_turns >= 2:
        x2, y2 = amount()
        while x2 == x:
            x2, y2 = amount()
        turns.append(
            turn(
                say("conv_more_q", lang, x=x2, frm=frm_name),
                say("conv_a", lang, x=x2, frm=frm_name, y=y2, to=to_name),
                say("unit_s", lang, y=y2, to=to_name),
                f"Same conversion: {x2} {en_frm} is {y2} {en_to}.",
            )
        )
    if n_turns >= 3:
        t = y + y2
        turns.append(
            turn(
                say("conv_total_q", lang),
                say("conv_total_a", lang, t=t, to=to_name),
                say("unit_s", lang, y=t, to=to_name),
                f"Adding both results: {y} + {y2} = {t} {en_to}.",
            )
        )
    return turns


def gen_capital(rng: random.Random, lang: str, n_turns: int) -> list[dict]:
    first, second = rng.sample(COUNTRIES, 2)

    def capital_think(entry: dict) -> str:
        en_country, en_cap = entry["en"]
        local = entry[lang][1]
        if local == en_cap:
            return f"The capital of {en_country} is {en_cap}."
        return f"The capital of {en_country} is {en_cap}, written {local} in {LANG_NAME[lang]}."

    def length_turn(entry: dict) -> dict:
        city = entry[lang][1]
        n = sum(ch.isalpha() for ch in city)
        return turn(
            say("cap_len_q", lang),
            say("name_len_a", lang, k=city, n=n),
            say("letters_s", lang, n=n),
            f"{city} is {spelled(city)}, so {n} letters.",
        )

    c, k = first[lang]
    turns = [turn(say("cap_q", lang, c=c), say("cap_a", lang, c=c, k=k), f"{k}.", capital_think(first))]
    # two-turn rows pick either follow-up; three-turn rows ask the second
    # capital and then the length of that latest city name
    ask_next = n_turns == 3 or rng.random() < 0.5
    last = first
    if ask_next:
        c2, k2 = second[lang]
        turns.append(
            turn(say("cap_next_q", lang, c=c2), say("cap_a", lang, c=c2, k=k2), f"{k2}.", capital_think(second))
        )
        last = second
    if len(turns) < n_turns:
        turns.append(length_turn(last))
    return turns


def most_repeated_letter(word: str) -> tuple[str, int]:
    best, best_n = "", 0
    for ch in word:
        n = word.count(ch)
        if n > best_n:
            best, best_n = ch, n
    return best, best_n


def gen_count(rng: random.Random, lang: str, n_turns: int) -> list[dict]:
    w = rng.choice(WORDS[lang])
    n = len(w)
    turns = [
        turn(
            say("count_q", lang, w=w),
            say("count_a", lang, w=w, n=n),
            say("letters_s", lang, n=n),
            f"'{w}' is {spelled(w)}, so {n} letters.",
        )
    ]
    if n_turns >= 2:
        c, k = most_repeated_letter(w)
        turns.append(
            turn(
                say("occ_q", lang, c=c),
                say("occ_a", lang, c=c, k=k),
                say("occ_s", lang, k=k),
                f"In {spelled(w)} the letter '{c}' appears {k} times.",
            )
        )
    if n_turns >= 3:
        r = w[::-1]
        turns.append(
            turn(
                say("back_q", lang),
                say("back_a", lang, r=r),
                say("quoted_s", lang, r=r),
                f"Reading '{w}' from the end gives '{r}'.",
            )
        )
    return turns


def gen_reverse(rng: random.Random, lang: str, n_turns: int) -> list[dict]:
    w = rng.choice(PALINDROMES[lang]) if rng.random() < 0.25 else rng.choice(WORDS[lang])
    r = w[::-1]
    turns = [
        turn(
            say("rev_q", lang, w=w),
            say("rev_a", lang, w=w, r=r),
            say("quoted_s", lang, r=r),
            f"Reading {spelled(w)} from the end gives '{r}'.",
        )
    ]
    if n_turns >= 2:
        if r == w:
            turns.append(
                turn(
                    say("pal_q", lang),
                    say("pal_yes", lang, w=w),
                    say("yes_s", lang),
                    f"'{w}' reversed is '{r}', identical, so yes.",
                )
            )
        else:
            turns.append(
                turn(
                    say("pal_q", lang),
                    say("pal_no", lang, w=w, r=r),
                    say("no_s", lang),
                    f"'{w}' reversed is '{r}', which differs, so no.",
                )
            )
    if n_turns >= 3:
        up = r.upper()
        turns.append(
            turn(
                say("upper_q", lang),
                say("upper_a", lang, r=up),
                say("quoted_s", lang, r=up),
                f"Uppercasing the reversed word '{r}' gives '{up}'.",
            )
        )
    return turns


def gen_compare(rng: random.Random, lang: str, n_turns: int) -> list[dict]:
    a, b = rng.sample(range(10, 100), 2)
    m, n = max(a, b), min(a, b)
    turns = [
        turn(
            say("cmp_q", lang, a=a, b=b),
            say("cmp_a", lang, m=m, n=n),
            f"{m}.",
            f"Comparing {a} and {b}: {m} is larger.",
        )
    ]
    if n_turns >= 2:
        d = m - n
        turns.append(
            turn(
                say("diff_q", lang), say("diff_a", lang, d=d, m=m, n=n), f"{d}.", f"The difference is {m} - {n} = {d}."
            )
        )
    if n_turns >= 3:
        s = a + b
        turns.append(
            turn(say("sum_q", lang), say("sum_a", lang, a=a, b=b, s=s), f"{s}.", f"The sum is {a} + {b} = {s}.")
        )
    return turns


def gen_weekday(rng: random.Random, lang: str, n_turns: int) -> list[dict]:
    names, en = WEEKDAYS[lang], WEEKDAYS["en"]
    start = rng.randrange(7)
    n = rng.randint(2, 20)
    d1 = (start + n) % 7
    if n % 7 == 0:
        why = f"{n} is a multiple of 7, so it is {en[d1]} again."
    else:
        why = f"{n} mod 7 = {n % 7}, and {n % 7} days after {en[start]} is {en[d1]}."
    turns = [
        turn(
            say("day_q", lang, d=names[start], n=n),
            say("day_a", lang, n=n, d=names[d1]),
            cap_first(names[d1]) + ".",
            why,
        )
    ]
    if n_turns >= 2:
        m = rng.randint(1, 6)
        d2 = (d1 + m) % 7
        turns.append(
            turn(
                say("day_more_q", lang, n=m),
                say("day_more_a", lang, n=m, d=names[d2]),
                cap_first(names[d2]) + ".",
                f"{m} days after {en[d1]} is {en[d2]}.",
            )
        )
    if n_turns >= 3:
        t = n + m
        turns.append(
            turn(
                say("day_total_q", lang),
                say("day_total_a", lang, t=t, n=n, m=m),
                say("days_s", lang, t=t),
                f"{n} + {m} = {t} days in total.",
            )
        )
    return turns


TOPICS = [gen_arithmetic, gen_conversion, gen_capital, gen_count, gen_reverse, gen_compare, gen_weekday]


def build_row(rng: random.Random, lang: str, topic, style: str | None) -> dict:
    n_turns = rng.choice([2, 3])
    turns = topic(rng, lang, n_turns)
    assert len(turns) == n_turns, (topic.__name__, lang, n_turns)
    language = LANG_NAME[lang]
    messages = []
    if style is not None:
        messages.append({"role": "developer", "content": rng.choice(DEVELOPER[style]).format(language=language)})
    for i, t in enumerate(turns):
        if style == "brief":
            content = cap_first(t["short"])
        elif style == "summary":
            content = t["full"] + "\n" + say("summary", lang, s=cap_first(t["short"]))
        else:
            content = t["full"]
        thinking = t["think"]
        # mention the instruction once, where the model first has to act on it
        if style is not None and i == 0:
            thinking += " " + DEVELOPER_NOTE[style].format(language=language)
        messages.append({"role": "user", "content": t["user"]})
        messages.append({"role": "assistant", "content": content, "thinking": thinking})
    return {"messages": messages, "language": lang}


def build_rows() -> list[dict]:
    rng = random.Random(SEED)
    rows = []
    for li, lang in enumerate(LANGS):
        for k in range(ROWS_PER_LANGUAGE):
            # offsetting by the language index keeps every topic and style
            # spread across languages instead of lining up with them
            topic = TOPICS[(k + li) % len(TOPICS)]
            style = STYLES[(k // 3 + li) % len(STYLES)] if k % 3 == 0 else None
            rows.append(build_row(rng, lang, topic, style))
    # interleave languages and topics so that any prefix of the file (e.g. a
    # quick run with a row limit) is still a fair sample
    rng.shuffle(rows)
    return rows


def check(rows: list[dict]) -> None:
    for lang in LANGS:
        for w in WORDS[lang]:
            assert w.isalpha() and w == w.lower(), w
            assert most_repeated_letter(w)[1] >= 2, w
        for w in PALINDROMES[lang]:
            assert w == w[::-1], w
    for row in rows:
        for msg in row["messages"]:
            for value in msg.values():
                assert isinstance(value, str) and value.strip(), row
        users = [m for m in row["messages"] if m["role"] == "user"]
        assert len(users) in (2, 3), row


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # same directory as the target so os.replace is a rename, never a copy
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; a shipped data file should be world-readable
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main() -> None:
    rows = build_rows()
    check(rows)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomically(OUTPUT, text)
    print(f"wrote {len(rows)} rows to {OUTPUT}")


if __name__ == "__main__":
    main()
